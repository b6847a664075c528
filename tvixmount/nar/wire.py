"""NAR wire encoding shared by the writer, the reader and local-tree ingestion.

A NAR is a sequence of strings, each a little-endian u64 length, the bytes,
and zero padding to a multiple of 8. Everything else (tokens, names, targets,
file contents) is such a string.
"""

from __future__ import annotations

import struct

MAGIC = b"nix-archive-1"
PAD = 8
_ZEROS = bytes(PAD)
_U64 = struct.Struct("<Q")


def padding(length: int) -> int:
    """How many zero bytes follow a string of ``length`` bytes."""
    return -length % PAD


def u64(value: int) -> bytes:
    return _U64.pack(value)


def parse_u64(data: bytes | memoryview) -> int:
    value: int = _U64.unpack(data)[0]
    return value


def string(data: bytes) -> bytes:
    """One padded NAR string."""
    return _U64.pack(len(data)) + data + _ZEROS[: padding(len(data))]


def zeros(count: int) -> bytes:
    return _ZEROS[:count]


def _tokens(*parts: bytes) -> bytes:
    return b"".join(string(p) for p in parts)


# Precomputed token runs: every node header and trailer is one of these.
HEADER = _tokens(MAGIC)
OPEN = _tokens(b"(")
CLOSE = _tokens(b")")
REGULAR_PREFIX = _tokens(b"(", b"type", b"regular", b"contents")
EXECUTABLE_PREFIX = _tokens(b"(", b"type", b"regular", b"executable", b"", b"contents")
SYMLINK_PREFIX = _tokens(b"(", b"type", b"symlink", b"target")
DIRECTORY_PREFIX = _tokens(b"(", b"type", b"directory")
ENTRY_PREFIX = _tokens(b"entry", b"(", b"name")
ENTRY_NODE = _tokens(b"node")
ENTRY_CLOSE = CLOSE  # closes one "entry" ( ... )


def regular_header(executable: bool, size: int) -> bytes:
    """Everything before a file's bytes: tokens and the contents length."""
    return (EXECUTABLE_PREFIX if executable else REGULAR_PREFIX) + _U64.pack(size)


def regular_trailer(size: int) -> bytes:
    """Padding after a file's bytes, then the node's closing token."""
    return _ZEROS[: padding(size)] + CLOSE


def symlink(target: bytes) -> bytes:
    return SYMLINK_PREFIX + string(target) + CLOSE


def entry_header(name: bytes) -> bytes:
    return ENTRY_PREFIX + string(name) + ENTRY_NODE

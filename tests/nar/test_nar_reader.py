"""NAR reader and NAR -> castore ingestion: round trips, and strict rejection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from tests.fixtures.local_tree import make_tree, nix_dump, requires_nix
from tvixmount.castore import DirectoryNode, FileNode, SymlinkNode
from tvixmount.castore.blobservice import read_all
from tvixmount.errors import NarError
from tvixmount.nar import ingest_nar, read_nar, wire, write_nar
from tvixmount.nar.reader import CONTENTS_CHUNK
from tvixmount.stores.memory.castore import MemoryBlobService, MemoryDirectoryService

# A tiny, deliberately unvalidating NAR builder, so tests can write bad archives.


def s(data: bytes) -> bytes:
    return wire.string(data)


def regular(contents: bytes, executable: bool = False) -> bytes:
    marker = s(b"executable") + s(b"") if executable else b""
    return s(b"(") + s(b"type") + s(b"regular") + marker + s(b"contents") + s(contents) + s(b")")


def symlink(target: bytes) -> bytes:
    return s(b"(") + s(b"type") + s(b"symlink") + s(b"target") + s(target) + s(b")")


def directory(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(
        s(b"entry") + s(b"(") + s(b"name") + s(name) + s(b"node") + node + s(b")")
        for name, node in entries
    )
    return s(b"(") + s(b"type") + s(b"directory") + body + s(b")")


def nar(node: bytes) -> bytes:
    return s(wire.MAGIC) + node


GOOD = nar(
    directory(
        [
            (b"a", regular(b"hello")),
            (b"b", directory([(b"x", symlink(b"../a"))])),
            (b"c", regular(b"#!/bin/sh\n", executable=True)),
            (b"d", directory([])),
        ]
    )
)


async def chunked(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class Services:
    def __init__(self) -> None:
        self.blobs = MemoryBlobService()
        self.directories = MemoryDirectoryService()

    async def ingest(self, data: bytes, chunk: int = 7) -> FileNode | DirectoryNode | SymlinkNode:
        return await ingest_nar(chunked(data, chunk), self.blobs, self.directories, b"root")

    async def nar(self, node: FileNode | DirectoryNode | SymlinkNode) -> bytes:
        return b"".join([c async for c in write_nar(node, self.blobs, self.directories)])


@pytest.fixture
def services() -> Services:
    return Services()


@requires_nix
@pytest.mark.parametrize("chunk", [4093, 1 << 16, 1 << 22])
async def test_nix_store_dump_round_trips_byte_identically(
    tmp_path: Path, services: Services, chunk: int
) -> None:
    dump = nix_dump(make_tree(tmp_path / "tree"))
    node = await services.ingest(dump, chunk)
    assert await services.nar(node) == dump


@pytest.mark.parametrize("chunk", [1, 3, 8, 13, 1 << 20])
async def test_built_nar_round_trips_whatever_the_chunking(services: Services, chunk: int) -> None:
    assert await services.nar(await services.ingest(GOOD, chunk)) == GOOD


async def test_root_node_gets_the_given_name(services: Services) -> None:
    node = await services.ingest(GOOD)
    assert node.name == b"root"


async def test_file_contents_become_blobs(services: Services) -> None:
    node = await services.ingest(nar(regular(b"hello", executable=True)))
    assert isinstance(node, FileNode)
    assert node.executable
    reader = await services.blobs.open_read(node.digest)
    assert reader is not None
    assert await read_all(reader) == b"hello"


async def test_directories_are_stored_with_tvix_sizes(services: Services) -> None:
    node = await services.ingest(GOOD)
    assert isinstance(node, DirectoryNode)
    assert node.size == 5  # a b c d + b/x
    assert len(services.directories.directories) == 3


async def test_symlink_root(services: Services) -> None:
    node = await services.ingest(nar(symlink(b"/nix/store/somewhereelse")))
    assert node == SymlinkNode(b"root", b"/nix/store/somewhereelse")


class _Recorder:
    """Records content piece sizes; optionally consumes nothing."""

    def __init__(self, consume: bool) -> None:
        self.consume = consume
        self.pieces: list[int] = []

    async def regular(
        self, name: bytes, executable: bool, size: int, contents: AsyncIterator[bytes]
    ) -> bytes:
        if self.consume:
            async for piece in contents:
                self.pieces.append(len(piece))
        return name

    async def symlink(self, name: bytes, target: bytes) -> bytes:
        return name

    async def directory(self, name: bytes, children: list[bytes]) -> bytes:
        return name + b"[" + b",".join(children) + b"]"


async def test_big_file_reaches_the_visitor_in_bounded_pieces() -> None:
    size = 3 * CONTENTS_CHUNK + 5
    recorder = _Recorder(consume=True)
    await read_nar(chunked(nar(regular(bytes(size))), 1 << 30), recorder)
    assert sum(recorder.pieces) == size
    assert max(recorder.pieces) <= CONTENTS_CHUNK


async def test_contents_a_visitor_skips_are_drained() -> None:
    result = await read_nar(chunked(GOOD), _Recorder(consume=False), b"r")
    assert result == b"r[a,b[x],c,d[]]"


def _u64(value: int) -> bytes:
    return wire.u64(value)


BAD_NARS: dict[str, tuple[bytes, str]] = {
    "empty stream": (b"", "truncated"),
    "bad magic": (s(b"nix-archive-2") + regular(b"x"), "bad magic"),
    "magic only": (s(wire.MAGIC), "truncated"),
    "unknown node type": (
        nar(s(b"(") + s(b"type") + s(b"fifo") + s(b")")),
        "unknown node type",
    ),
    "missing open paren": (nar(s(b"type") + s(b"regular")), "expected '\\('"),
    "unknown token in file": (
        nar(s(b"(") + s(b"type") + s(b"regular") + s(b"contentz") + s(b"") + s(b")")),
        "expected 'contents'",
    ),
    "executable marker not empty": (
        nar(
            s(b"(")
            + s(b"type")
            + s(b"regular")
            + s(b"executable")
            + s(b"x")
            + s(b"contents")
            + s(b"")
            + s(b")")
        ),
        "expected ''",
    ),
    "non-zero padding after contents": (
        nar(
            s(b"(")
            + s(b"type")
            + s(b"regular")
            + s(b"contents")
            + _u64(3)
            + b"abc\0\0\0\0\x01"
            + s(b")")
        ),
        "non-zero padding",
    ),
    "non-zero padding in a token": (
        s(wire.MAGIC) + _u64(1) + b"(\0\0\0\0\0\0\x07" + s(b"type"),
        "non-zero padding",
    ),
    "entries not sorted": (
        nar(directory([(b"b", regular(b"")), (b"a", regular(b""))])),
        "not sorted",
    ),
    "duplicate entry": (
        nar(directory([(b"a", regular(b"")), (b"a", symlink(b"t"))])),
        "duplicate entry name",
    ),
    "name dot": (nar(directory([(b".", regular(b""))])), "invalid entry name"),
    "name dotdot": (nar(directory([(b"..", regular(b""))])), "invalid entry name"),
    "name with slash": (nar(directory([(b"a/b", regular(b""))])), "invalid entry name"),
    "name with NUL": (nar(directory([(b"a\0b", regular(b""))])), "invalid entry name"),
    "empty name": (nar(directory([(b"", regular(b""))])), "invalid entry name"),
    "name too long": (nar(directory([(b"n" * 256, regular(b""))])), "more than the 255"),
    "huge token length": (s(wire.MAGIC) + _u64(1 << 40), "more than the 64"),
    "empty symlink target": (nar(symlink(b"")), "invalid symlink target"),
    "symlink target with NUL": (nar(symlink(b"a\0b")), "invalid symlink target"),
    "symlink target too long": (nar(symlink(b"t" * 4096)), "more than the 4095"),
    "directory entry garbage": (
        nar(s(b"(") + s(b"type") + s(b"directory") + s(b"entri") + s(b")")),
        "expected 'entry' or '\\)'",
    ),
    "trailing garbage": (GOOD + bytes(8), "trailing data"),
    "truncated in contents": (nar(regular(b"x" * 100))[:60], "truncated"),
    "truncated before last paren": (GOOD[:-8], "truncated"),
    "truncated in padding": (nar(regular(b"abc"))[:-11], "truncated"),
}


@pytest.mark.parametrize("data, message", BAD_NARS.values(), ids=BAD_NARS.keys())
async def test_malformed_nar_is_rejected(services: Services, data: bytes, message: str) -> None:
    with pytest.raises(NarError, match=message):
        await services.ingest(data)


@pytest.mark.parametrize("data, message", BAD_NARS.values(), ids=BAD_NARS.keys())
async def test_malformed_nar_stores_no_directory(
    services: Services, data: bytes, message: str
) -> None:
    with pytest.raises(NarError):
        await services.ingest(data)
    assert services.directories.directories == {}


async def test_error_late_in_the_nar_stores_none_of_the_earlier_directories(
    services: Services,
) -> None:
    good_subdir = directory([(b"x", regular(b"data"))])
    bad = nar(directory([(b"a", good_subdir), (b"b", good_subdir), (b"a", regular(b""))]))
    with pytest.raises(NarError, match="not sorted"):
        await services.ingest(bad)
    assert services.directories.directories == {}


async def test_every_truncation_of_a_valid_nar_is_rejected(services: Services) -> None:
    for cut in range(0, len(GOOD), 8):
        with pytest.raises(NarError, match="truncated"):
            await services.ingest(GOOD[:cut])

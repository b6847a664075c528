"""Stream the NAR of a castore node, byte-identical to ``nix-store --dump``.

Tokens and file contents are gathered into output chunks of about
``_OUT_CHUNK`` bytes, each joined once (a file's bytes are copied once on
their way from the blob service to the NAR); file contents are read in
``_READ_CHUNK`` pieces with positioned reads, so no blob is ever held whole
in memory. Directories are walked with an explicit stack (entries already
sorted by name, as NAR wants).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator

from ..castore.blobservice import BlobService
from ..castore.directoryservice import DirectoryService
from ..castore.nodes import DirectoryNode, FileNode, Node
from ..errors import IntegrityError, NotFoundError
from . import wire

_OUT_CHUNK = 64 << 10
_READ_CHUNK = 1 << 20


async def file_contents(node: FileNode, blobs: BlobService) -> AsyncIterator[bytes | memoryview]:
    """The blob of ``node`` in pieces, as the blob service hands them out (not copied)."""
    reader = await blobs.open_read(node.digest)
    if reader is None:
        raise NotFoundError(f"blob {node.digest} of {node.name!r} not found")
    try:
        if reader.size != node.size:
            raise IntegrityError(
                f"blob {node.digest} of {node.name!r} has {reader.size} bytes, "
                f"the node says {node.size}"
            )
        offset = 0
        while offset < node.size:
            data = await reader.pread(offset, min(_READ_CHUNK, node.size - offset))
            if not data:
                raise IntegrityError(f"blob {node.digest} ended early at byte {offset}")
            yield data
            offset += len(data)
    finally:
        await reader.aclose()


class _Out:
    """The NAR bytes of the next output chunk: pieces kept as they come, joined once."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.size = 0

    def add(self, data: bytes | memoryview) -> None:
        self.parts.append(data)
        self.size += len(data)

    def take(self) -> bytes:
        chunk = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return chunk


async def write_nar(
    node: Node, blobs: BlobService, directories: DirectoryService
) -> AsyncIterator[bytes]:
    """The NAR serialisation of ``node`` (its name is not part of the NAR).

    Raises :class:`NotFoundError` for a missing blob or Directory and
    :class:`IntegrityError` for a blob whose size disagrees with its node.
    """
    out = _Out()
    out.add(wire.HEADER)
    # Each stack entry iterates one directory's children in NAR order.
    stack: list[Iterator[Node]] = []
    current: Node | None = node
    while True:
        if current is None:
            child = next(stack[-1], None) if stack else None
            if child is None:
                if not stack:
                    break
                stack.pop()
                out.add(wire.CLOSE)  # the directory node
                if stack:
                    out.add(wire.ENTRY_CLOSE)
                continue
            out.add(wire.entry_header(child.name))
            current = child
        if isinstance(current, DirectoryNode):
            directory = await directories.get(current.digest)
            if directory is None:
                raise NotFoundError(f"directory {current.digest} of {current.name!r} not found")
            out.add(wire.DIRECTORY_PREFIX)
            stack.append(directory.entries())
        elif isinstance(current, FileNode):
            out.add(wire.regular_header(current.executable, current.size))
            async for data in file_contents(current, blobs):
                if out.size and out.size + len(data) > _OUT_CHUNK:
                    yield out.take()  # no chunk outgrows a read
                out.add(data)
                if out.size >= _OUT_CHUNK:
                    yield out.take()
            out.add(wire.regular_trailer(current.size))
            if stack:
                out.add(wire.ENTRY_CLOSE)
        else:
            out.add(wire.symlink(current.target))
            if stack:
                out.add(wire.ENTRY_CLOSE)
        current = None
        if out.size >= _OUT_CHUNK:
            yield out.take()
    if out.size:
        yield out.take()


async def calculate_nar(
    node: Node, blobs: BlobService, directories: DirectoryService
) -> tuple[int, bytes]:
    """The NAR size and SHA-256 digest of ``node``."""
    sha = hashlib.sha256()
    size = 0
    async for chunk in write_nar(node, blobs, directories):
        sha.update(chunk)
        size += len(chunk)
    return size, sha.digest()

"""Stream the NAR of a castore node, byte-identical to ``nix-store --dump``.

Token runs are batched into output chunks of about ``_OUT_CHUNK`` bytes;
file contents are read from the blob service in ``_READ_CHUNK`` pieces with
positioned reads, so no blob is ever held whole in memory. Directories are
walked with an explicit stack (entries already sorted by name, as NAR wants).
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


async def _file_contents(node: FileNode, blobs: BlobService) -> AsyncIterator[bytes]:
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
            yield bytes(data)
            offset += len(data)
    finally:
        await reader.aclose()


async def write_nar(
    node: Node, blobs: BlobService, directories: DirectoryService
) -> AsyncIterator[bytes]:
    """The NAR serialisation of ``node`` (its name is not part of the NAR).

    Raises :class:`NotFoundError` for a missing blob or Directory and
    :class:`IntegrityError` for a blob whose size disagrees with its node.
    """
    out = bytearray(wire.HEADER)
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
                out += wire.CLOSE  # the directory node
                if stack:
                    out += wire.ENTRY_CLOSE
                continue
            out += wire.entry_header(child.name)
            current = child
        if isinstance(current, DirectoryNode):
            directory = await directories.get(current.digest)
            if directory is None:
                raise NotFoundError(f"directory {current.digest} of {current.name!r} not found")
            out += wire.DIRECTORY_PREFIX
            stack.append(directory.entries())
        elif isinstance(current, FileNode):
            out += wire.regular_header(current.executable, current.size)
            async for data in _file_contents(current, blobs):
                if len(out) + len(data) > _OUT_CHUNK:
                    if out:
                        yield bytes(out)
                        out.clear()
                    if len(data) >= _OUT_CHUNK:
                        yield data
                        continue
                out += data
            out += wire.regular_trailer(current.size)
            if stack:
                out += wire.ENTRY_CLOSE
        else:
            out += wire.symlink(current.target)
            if stack:
                out += wire.ENTRY_CLOSE
        current = None
        if len(out) >= _OUT_CHUNK:
            yield bytes(out)
            out.clear()
    if out:
        yield bytes(out)


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

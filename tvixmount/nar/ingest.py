"""NAR stream -> castore blobs and directories."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from ..castore.blobservice import BlobService
from ..castore.digest import B3Digest
from ..castore.directory import Directory
from ..castore.directoryservice import DirectoryService
from ..castore.nodes import DirectoryNode, FileNode, Node, SymlinkNode
from .reader import read_nar


class _CastoreBuilder:
    """A NarVisitor that stores files as blobs and collects Directories leaves-first."""

    def __init__(self, blobs: BlobService) -> None:
        self._blobs = blobs
        # dict keeps first-insertion order: children always precede parents.
        self.directories: dict[B3Digest, Directory] = {}

    async def regular(
        self, name: bytes, executable: bool, size: int, contents: AsyncIterator[bytes]
    ) -> Node:
        writer = await self._blobs.open_write()
        try:
            async for chunk in contents:
                await writer.write(chunk)
        except BaseException:
            await writer.abort()
            raise
        return FileNode(name, await writer.finish(), size, executable)

    async def symlink(self, name: bytes, target: bytes) -> Node:
        return SymlinkNode(name, target)

    async def directory(self, name: bytes, children: list[Node]) -> Node:
        directory = Directory.from_nodes(children)
        digest = directory.digest()
        self.directories.setdefault(digest, directory)
        return DirectoryNode(name, digest, directory.size())


async def ingest_nar(
    chunks: AsyncIterator[bytes] | AsyncIterable[bytes],
    blobs: BlobService,
    directories: DirectoryService,
    name: bytes,
) -> Node:
    """Ingest a NAR stream; returns the root node named ``name``.

    Raises :class:`~tvixmount.errors.NarError` for a malformed or
    non-canonical NAR. Directories are put (leaves first, in one batch) only
    after the whole archive parsed; blobs written before an error stay, as
    they are content-addressed and referenced by nothing.
    """
    builder = _CastoreBuilder(blobs)
    root = await read_nar(chunks, builder, root_name=name)
    if builder.directories:
        await directories.put_many(list(builder.directories.values()))
    return root

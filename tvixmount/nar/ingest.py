"""NAR stream -> castore blobs and directories."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol, runtime_checkable

import blake3
import trio

from ..castore.blobservice import BlobService, BlobWriter
from ..castore.digest import B3Digest
from ..castore.directory import Directory
from ..castore.directoryservice import DirectoryService
from ..castore.nodes import DirectoryNode, FileNode, Node, SymlinkNode
from ..errors import StoreError
from .reader import read_nar

# Directories held before they are put: beyond this many entries in all, the finished
# subtrees are put (leaves first) and let go, so memory follows the open directories.
_PENDING_ENTRIES = 1 << 16
# Blobs written but still being made durable, at most; each may hold an open temp file.
_FINISHING = 64
# Chunks from this size on are hashed in a worker thread; below it the hop costs more.
_THREADED_HASH_MIN = 64 << 10


@runtime_checkable
class DigestingWriter(Protocol):
    """A blob writer that hashes what it is given and tells the digest before ``finish``
    (the embedded store's): the builder then need not hash every file a second time."""

    def digest(self) -> B3Digest:
        """The digest of the bytes written so far."""
        ...


class _CastoreBuilder:
    """A NarVisitor that stores files as blobs and puts Directories leaves-first."""

    def __init__(
        self, blobs: BlobService, directories: DirectoryService, nursery: trio.Nursery
    ) -> None:
        self._blobs = blobs
        self._directories = directories
        # dict keeps first-insertion order: children always precede parents.
        self.pending: dict[B3Digest, Directory] = {}
        self._pending_entries = 0
        self._put: set[B3Digest] = set()
        # Every empty file is the same blob: storing it once spares a NAR of a million
        # empty files a million blob writes.
        self._empty: B3Digest | None = None
        self._finishing = trio.Semaphore(_FINISHING)
        self._nursery = nursery  # where blobs are finished
        self.finish_error: Exception | None = None

    async def regular(
        self, name: bytes, executable: bool, size: int, contents: AsyncIterator[bytes]
    ) -> Node:
        if size == 0 and self._empty is not None:
            return FileNode(name, self._empty, 0, executable)
        # The digest is known here (computed here, or told by a writer that hashes
        # anyway), so parsing goes on while the blob is made durable: a store's finish()
        # waits for a sync, and one sync after another, file by file, was most of a cold
        # fetch's time. Blobs finish together (a group commit shares one sync), and
        # ingest_nar returns only once all of them did.
        await self._finishing.acquire()
        try:
            writer = await self._blobs.open_write()
        except BaseException:
            self._finishing.release()
            raise
        digesting = writer if isinstance(writer, DigestingWriter) else None
        hasher = blake3.blake3()
        try:
            async for chunk in contents:
                if digesting is None:
                    if len(chunk) >= _THREADED_HASH_MIN:
                        # BLAKE3 releases the GIL: off the trio loop, it runs beside parsing.
                        await trio.to_thread.run_sync(hasher.update, chunk)
                    else:
                        hasher.update(chunk)
                await writer.write(chunk)
        except BaseException:
            self._finishing.release()
            await writer.abort()
            raise
        digest = digesting.digest() if digesting is not None else B3Digest(hasher.digest())
        self._nursery.start_soon(self._finish, writer, digest)
        if size == 0:
            self._empty = digest
        return FileNode(name, digest, size, executable)

    async def _finish(self, writer: BlobWriter, digest: B3Digest) -> None:
        try:
            stored = await writer.finish()
            if stored != digest:
                raise StoreError(f"the blob store computed {stored} for a blob that is {digest}")
        except Exception as exc:  # raised by ingest_nar, as if finish() had been awaited there
            if self.finish_error is None:
                self.finish_error = exc
        finally:
            self._finishing.release()

    async def symlink(self, name: bytes, target: bytes) -> Node:
        return SymlinkNode(name, target)

    async def directory(self, name: bytes, children: list[Node]) -> Node:
        directory = Directory.from_nodes(children)
        digest = directory.digest()
        if digest not in self._put and digest not in self.pending:
            self.pending[digest] = directory
            self._pending_entries += len(children)
            if self._pending_entries > _PENDING_ENTRIES:
                await self.flush()
        return DirectoryNode(name, digest, directory.size())

    async def flush(self) -> None:
        if self.pending:
            await self._directories.put_many(list(self.pending.values()))
            self._put.update(self.pending)
            self.pending.clear()
            self._pending_entries = 0


async def ingest_nar(
    chunks: AsyncIterator[bytes] | AsyncIterable[bytes],
    blobs: BlobService,
    directories: DirectoryService,
    name: bytes,
) -> Node:
    """Ingest a NAR stream; returns the root node named ``name``.

    Raises :class:`~tvixmount.errors.NarError` for a malformed or
    non-canonical NAR. Returns once every blob is stored (the caller records
    a PathInfo next). Directories are put leaves first: in one batch once
    the whole archive parsed, or, for a NAR of very many entries, finished
    subtrees along the way (a batch is then a forest). Blobs and Directories
    written before an error stay, as they are content-addressed and
    referenced by nothing.
    """
    parse_error: Exception | None = None
    async with trio.open_nursery() as nursery:
        builder = _CastoreBuilder(blobs, directories, nursery)
        try:
            root = await read_nar(chunks, builder, root_name=name)
        except Exception as exc:
            parse_error = exc  # raised below, not wrapped in the nursery's exception group
    if parse_error is not None:
        raise parse_error
    if builder.finish_error is not None:
        raise builder.finish_error
    await builder.flush()
    return root

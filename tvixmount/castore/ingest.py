"""Ingest a local file tree into castore, hashing its NAR in the same pass.

Two stages run in parallel so the work spreads over two cores:

- the *walker*, in a worker thread, visits entries in NAR order (each
  directory's entries sorted by raw name bytes, depth first), reads every
  file exactly once in big chunks and feeds the NAR serialisation of the
  tree to SHA-256 as it goes (hashlib releases the GIL on big buffers);
- the *storer*, on the trio loop, streams each file's chunks into a blob
  writer (which computes the BLAKE3 digest), up to ``MAX_PENDING_BLOBS``
  at a time, so blob stores that sync each blob to disk overlap those
  syncs instead of queueing one after the other.

The walker hands over batches of events through a small memory channel, so
at most a few batches of file data are in memory at once. Directories are
built once every blob digest is known and put in one batch, leaves first,
only if the whole walk succeeded (blobs may remain after an error: they are
content-addressed and referenced by nothing).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..errors import IngestError
from ..nar import wire
from .blobservice import BlobService, BlobWriter
from .digest import B3Digest
from .directory import Directory
from .directoryservice import DirectoryService
from .nodes import DirectoryNode, FileNode, Node, SymlinkNode

# Big reads keep per-syscall and per-hash-call overhead negligible.
READ_CHUNK = 1 << 20
# A batch of walker events is handed over once it holds this much file data
# (or this many events), amortising the thread hand-over.
_BATCH_BYTES = 4 << 20
_BATCH_EVENTS = 1024
# Batches in flight between walker and storer: bounds memory to a few batches.
_CHANNEL_SIZE = 2
# Blobs being stored at once (each holds an open temp file, small ones
# their bytes too).
MAX_PENDING_BLOBS = 256
# Files up to this size are collected in memory and stored by a task of their own.
SMALL_FILE = 256 << 10
# Token bytes are hashed in batches: one hashlib call per token would
# dominate for trees of many small files.
_TOKEN_FLUSH = 64 << 10

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class IngestedTree:
    """The root node of an ingested tree plus the size and SHA-256 of its NAR."""

    node: Node
    nar_size: int
    nar_sha256: bytes


# Walker events. File contents follow a _File event as plain ``bytes`` chunks
# adding up to its size.
@dataclass(frozen=True, slots=True)
class _Enter:
    name: bytes


@dataclass(frozen=True, slots=True)
class _Leave:
    pass


@dataclass(frozen=True, slots=True)
class _File:
    name: bytes
    size: int
    executable: bool


_Event = _Enter | _Leave | _File | SymlinkNode | bytes
_LEAVE = _Leave()


class _NarHash:
    """Running SHA-256 and length of the NAR the walk describes."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._pending = bytearray()
        self.size = 0

    def tokens(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) >= _TOKEN_FLUSH:
            self._flush()

    def contents(self, data: bytes) -> None:
        self._flush()
        self._sha.update(data)
        self.size += len(data)

    def _flush(self) -> None:
        if self._pending:
            self._sha.update(self._pending)
            self.size += len(self._pending)
            self._pending.clear()

    def digest(self) -> bytes:
        self._flush()
        return self._sha.digest()


def _kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return f"an unsupported file type (mode {mode:o})"


def _show(path: bytes) -> str:
    return os.fsdecode(path)


def _lstat(path: bytes) -> os.stat_result:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        raise IngestError(f"{_show(path)}: no such file or directory") from None
    except OSError as exc:
        raise IngestError(f"{_show(path)}: cannot stat: {exc.strerror}") from None


def _list(path: bytes) -> list[bytes]:
    try:
        with os.scandir(path) as it:
            return sorted(entry.name for entry in it)
    except OSError as exc:
        raise IngestError(f"{_show(path)}: cannot list directory: {exc.strerror}") from None


def _read_file(path: bytes, size: int, nar: _NarHash) -> Iterator[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise IngestError(f"{_show(path)}: cannot open: {exc.strerror}") from None
    try:
        done = 0
        while done < size:
            try:
                chunk = os.read(fd, min(READ_CHUNK, size - done))
            except OSError as exc:
                raise IngestError(f"{_show(path)}: cannot read: {exc.strerror}") from None
            if not chunk:
                break
            nar.contents(chunk)
            done += len(chunk)
            yield chunk
        # The NAR header already promised ``size`` bytes: a file that changed
        # under us would make the hash describe nothing real.
        if done != size or os.read(fd, 1):
            raise IngestError(f"{_show(path)}: file changed size while being read")
    finally:
        os.close(fd)


def _walk(root: bytes, name: bytes, nar: _NarHash) -> Iterator[_Event]:
    """The tree's events in NAR order, hashing its NAR along the way (blocking)."""
    nar.tokens(wire.HEADER)
    # An explicit stack: depth is bounded by PATH_MAX, not the recursion limit.
    stack: list[tuple[bytes, Iterator[bytes]]] = []
    path, entry_name = root, name
    while True:
        st = _lstat(path)
        entered = False
        if stat.S_ISDIR(st.st_mode):
            nar.tokens(wire.DIRECTORY_PREFIX)
            yield _Enter(entry_name)
            stack.append((path, iter(_list(path))))
            entered = True
        elif stat.S_ISREG(st.st_mode):
            executable = bool(st.st_mode & stat.S_IXUSR)
            nar.tokens(wire.regular_header(executable, st.st_size))
            yield _File(entry_name, st.st_size, executable)
            yield from _read_file(path, st.st_size, nar)
            nar.tokens(wire.regular_trailer(st.st_size))
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError as exc:
                raise IngestError(f"{_show(path)}: cannot read symlink: {exc.strerror}") from None
            nar.tokens(wire.symlink(target))
            yield SymlinkNode(entry_name, target)
        else:
            raise IngestError(f"{_show(path)}: cannot import {_kind(st.st_mode)}")
        # Move on to the next entry, closing each finished entry and directory.
        entry_open = not entered and bool(stack)
        while stack:
            if entry_open:
                nar.tokens(wire.ENTRY_CLOSE)
            parent, children = stack[-1]
            child = next(children, None)
            if child is not None:
                nar.tokens(wire.entry_header(child))
                path, entry_name = os.path.join(parent, child), child
                break
            stack.pop()
            nar.tokens(wire.CLOSE)
            yield _LEAVE
            entry_open = bool(stack)
        else:
            return


@dataclass(slots=True)
class _FileRecord:
    name: bytes
    size: int
    executable: bool
    digest: B3Digest | None = None


@dataclass(slots=True)
class _DirRecord:
    name: bytes
    children: list[_DirRecord | _FileRecord | SymlinkNode] = field(default_factory=list)


def _leaf(record: _FileRecord | SymlinkNode) -> Node:
    if isinstance(record, SymlinkNode):
        return record
    assert record.digest is not None, "every blob finished before the tree is built"
    return FileNode(record.name, record.digest, record.size, record.executable)


def _build(root: _DirRecord | _FileRecord | SymlinkNode, out: dict[B3Digest, Directory]) -> Node:
    """Nodes from records, bottom-up; Directories land in ``out`` leaves first."""
    if not isinstance(root, _DirRecord):
        return _leaf(root)
    stack: list[tuple[_DirRecord, Iterator[_DirRecord | _FileRecord | SymlinkNode], list[Node]]]
    stack = [(root, iter(root.children), [])]
    while True:
        record, children, nodes = stack[-1]
        child = next(children, None)
        if isinstance(child, _DirRecord):
            stack.append((child, iter(child.children), []))
        elif child is not None:
            nodes.append(_leaf(child))
        else:
            stack.pop()
            directory = Directory.from_nodes(nodes)
            digest = directory.digest()
            out.setdefault(digest, directory)
            node = DirectoryNode(record.name, digest, directory.size())
            if not stack:
                return node
            stack[-1][2].append(node)


class _Storer:
    """Consumes walker batches on the trio loop: blobs in, a record tree out.

    Small files are stored whole by their own task (their bytes are already
    in memory), so creating, writing and syncing many of them overlaps; big
    files stream through one writer in order and only their completion runs
    concurrently. ``MAX_PENDING_BLOBS`` bounds both, and with it memory.
    """

    def __init__(self, blobs: BlobService, progress: Progress | None) -> None:
        self._blobs = blobs
        self._progress = progress
        self._slots = trio.Semaphore(MAX_PENDING_BLOBS)
        self.root: _DirRecord | _FileRecord | SymlinkNode | None = None
        self._stack: list[_DirRecord] = []
        self._file: _FileRecord | None = None
        self._writer: BlobWriter | None = None  # a big file being streamed
        self._parts: list[bytes] = []  # a small file being collected
        self._remaining = 0

    def _attach(self, record: _DirRecord | _FileRecord | SymlinkNode) -> None:
        if self._stack:
            self._stack[-1].children.append(record)
        else:
            self.root = record

    async def _finish(self, writer: BlobWriter, record: _FileRecord) -> None:
        try:
            record.digest = await writer.finish()
        finally:
            self._slots.release()

    async def _store_small(self, parts: list[bytes], record: _FileRecord) -> None:
        try:
            writer = await self._blobs.open_write()
            try:
                for part in parts:
                    await writer.write(part)
            except BaseException:
                await writer.abort()
                raise
            record.digest = await writer.finish()
        finally:
            self._slots.release()

    async def _file_done(self, nursery: trio.Nursery) -> None:
        record = self._file
        assert record is not None
        await self._slots.acquire()
        if self._writer is None:
            nursery.start_soon(self._store_small, self._parts, record)
            self._parts = []
        else:
            nursery.start_soon(self._finish, self._writer, record)
            self._writer = None
        self._file = None

    async def consume(
        self, batches: trio.MemoryReceiveChannel[list[_Event]], nursery: trio.Nursery
    ) -> None:
        try:
            async with batches:
                async for batch in batches:
                    for event in batch:
                        await self._event(event, nursery)
        except BaseException:
            if self._writer is not None:
                await self._writer.abort()
            raise

    async def _event(self, event: _Event, nursery: trio.Nursery) -> None:
        if isinstance(event, bytes):
            if self._writer is None:
                self._parts.append(event)
            else:
                await self._writer.write(event)
            self._remaining -= len(event)
            if self._progress is not None:
                self._progress(len(event))
            if not self._remaining:
                await self._file_done(nursery)
        elif isinstance(event, _File):
            self._file = _FileRecord(event.name, event.size, event.executable)
            self._attach(self._file)
            self._remaining = event.size
            if event.size > SMALL_FILE:
                self._writer = await self._blobs.open_write()
            elif not event.size:
                await self._file_done(nursery)
        elif isinstance(event, _Enter):
            record = _DirRecord(event.name)
            self._attach(record)
            self._stack.append(record)
        elif isinstance(event, _Leave):
            self._stack.pop()
        else:
            self._attach(event)


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The only error inside ``group`` (nested groups flattened), else the group."""
    errors: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            errors.append(error)
    return errors[0] if len(errors) == 1 else group


def _produce(
    root: bytes,
    name: bytes,
    nar: _NarHash,
    send: trio.MemorySendChannel[list[_Event]],
) -> None:
    """Run the walk in a worker thread, shipping events to the trio loop in batches."""
    batch: list[_Event] = []
    data = 0
    try:
        for event in _walk(root, name, nar):
            batch.append(event)
            if isinstance(event, bytes):
                data += len(event)
            if data >= _BATCH_BYTES or len(batch) >= _BATCH_EVENTS:
                trio.from_thread.run(send.send, batch)
                batch, data = [], 0
        if batch:
            trio.from_thread.run(send.send, batch)
    except trio.BrokenResourceError:
        pass  # the storer stopped on an error of its own, which is the one to report
    finally:
        # Channels are not thread-safe: close it on the loop's thread.
        trio.from_thread.run_sync(send.close)


async def ingest_path(
    path: Path | str,
    blobs: BlobService,
    directories: DirectoryService,
    name: bytes | None = None,
    progress: Progress | None = None,
) -> IngestedTree:
    """Ingest ``path`` (not following a symlink at the root) into castore.

    Returns the root node (named ``name``, default the path's basename) with
    the size and SHA-256 of the tree's NAR serialisation. Anything but
    regular files, directories and symlinks raises :class:`IngestError`
    naming the offending path; no Directory is stored unless the whole walk
    succeeded. ``progress`` is called with the number of file bytes stored
    after each chunk.
    """
    root = os.fsencode(os.path.abspath(path))
    root_name = os.path.basename(root) if name is None else name
    nar = _NarHash()
    storer = _Storer(blobs, progress)
    send, receive = trio.open_memory_channel[list[_Event]](_CHANNEL_SIZE)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(storer.consume, receive, nursery)
            await trio.to_thread.run_sync(_produce, root, root_name, nar, send)
    except BaseExceptionGroup as group:
        # Callers expect the one error that stopped the import, not trio's wrapping.
        raise _sole_error(group) from None
    assert storer.root is not None
    built: dict[B3Digest, Directory] = {}
    node = _build(storer.root, built)
    if built:
        await directories.put_many(list(built.values()))
    nar_sha256 = nar.digest()  # flushes pending tokens, so read the size after it
    return IngestedTree(node, nar.size, nar_sha256)

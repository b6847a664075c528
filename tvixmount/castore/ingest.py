"""Ingest a local file tree into castore, hashing its NAR in the same pass.

Two stages run in parallel so the work spreads over two cores:

- the *walker*, in a worker thread, visits entries in NAR order (each
  directory's entries sorted by raw name bytes, depth first), builds the
  tree's records, reads every file exactly once (small files in one read,
  big ones in ``READ_CHUNK`` pieces) and feeds the NAR serialisation of the
  tree to SHA-256 as it goes (hashlib releases the GIL on big buffers);
- the *storer*, on the trio loop, writes each file's bytes into a blob
  writer (which computes the BLAKE3 digest, also without the GIL) and sets
  the file's digest on its record.

The walker hands over batches of ``(record, bytes)`` jobs without waiting
for the trio loop (it only blocks once ``_BATCHES_IN_FLIGHT`` batches are
not yet stored), so the two threads overlap instead of taking turns. The
storer keeps per-file work off the scheduler: small files are stored in
groups, one task per group, and up to ``MAX_PENDING_BLOBS`` groups and
big-file completions run at once, so stores that wait in ``finish`` for a
shared durability commit still commit many blobs at a time. A store that
offers ``put_many`` (:class:`PutsMany`, the embedded one) takes a whole
group at once and waits for its commit once, not once per file.

When small files turn out to come from the disk rather than the page cache,
a prefetch thread walks ahead of the walker and has the kernel read them in
the background, so their reads overlap instead of waiting one by one.

Directories are built once every blob digest is known and put in one batch,
leaves first, only if the whole walk succeeded (blobs may remain after an
error: they are content-addressed and referenced by nothing).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import trio

from ..errors import IngestError, TvixmountError
from ..nar import wire
from .blobservice import BlobService, BlobWriter, put_stream
from .digest import B3Digest
from .directory import Directory
from .directoryservice import DirectoryService
from .nodes import DirectoryNode, FileNode, Node, SymlinkNode

# Big reads keep per-syscall and per-hash-call overhead negligible.
READ_CHUNK = 1 << 20
# A batch of walker jobs is handed over once it holds this much file data
# (or this many jobs), amortising the thread hand-over.
_BATCH_BYTES = 4 << 20
_BATCH_JOBS = 1024
# Batches shipped but not yet stored: bounds memory to a few batches, while
# leaving the walker slack when the storer falls briefly behind.
_BATCHES_IN_FLIGHT = 8
# Files up to this size are read whole and stored by a group task, one
# after the other within the group.
SMALL_FILE = 256 << 10
# A group of small files is at most this many files or bytes. Spawning a
# trio task costs about as much as storing a small blob into a store that
# does not wait in ``finish``, so tasks are per group, not per file.
_GROUP_FILES = 16
_GROUP_BYTES = 256 << 10
# Group tasks and big-file completions running at once. Stores whose
# ``finish`` waits for a durability commit shared by every blob pending at
# the time commit about this many blobs at once (one per task), so it should
# be large; it also bounds memory (at most this many groups held).
MAX_PENDING_BLOBS = 256
# A small file whose open and read took longer than this may have come from
# the disk: the next small file is then checked, and if it is not in the page
# cache the prefetcher starts. Timing alone is no proof: on a busy machine a
# cached read takes that long while the walker waits for the CPU or the GIL,
# and a prefetcher started on a cached tree only costs syscalls.
_COLD_READ = 0.002
# Files the prefetcher may be ahead of the walker: enough to keep the disk
# busy, few enough that their pages are still cached when the walker comes.
_PREFETCH_AHEAD = 512
# Short token runs and small files' bytes are hashed in batches: one
# hashlib call per token (or per small file) would dominate for trees of
# many small files.
_TOKEN_FLUSH = 64 << 10

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class IngestedTree:
    """The root node of an ingested tree plus the size and SHA-256 of its NAR."""

    node: Node
    nar_size: int
    nar_sha256: bytes


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


_Record = _DirRecord | _FileRecord | SymlinkNode
# What the walker hands to the storer: a file's record and some of its bytes.
# A small file is one job holding all its bytes; a big file is a run of
# consecutive jobs, one per chunk, in order.
_Job = tuple[_FileRecord, bytes]


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
        if len(data) < _TOKEN_FLUSH:
            self.tokens(data)
            return
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
    if stat.S_ISDIR(mode):
        return "a directory"
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


def _read_file(path: bytes, size: int) -> Iterator[bytes]:
    """The file's ``size`` bytes in chunks of at most ``READ_CHUNK`` (none if empty)."""
    try:
        # Non-blocking: the file may have been swapped for a FIFO since it was
        # seen, and opening a FIFO without a writer would wait forever.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise IngestError(f"{_show(path)}: cannot open: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise IngestError(f"{_show(path)}: changed into {_kind(mode)} while being imported")
        os.set_blocking(fd, True)
        left = size
        while True:
            # Asking for one byte more than is left makes the read that
            # completes the file also show its end, with no extra read.
            want = min(READ_CHUNK, left + 1)
            try:
                chunk = os.read(fd, want)
            except OSError as exc:
                raise IngestError(f"{_show(path)}: cannot read: {exc.strerror}") from None
            # The NAR header already promised ``size`` bytes: a file that
            # changed under us would make the hash describe nothing real.
            if len(chunk) > left:
                raise IngestError(f"{_show(path)}: file changed size while being read")
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
            if not left and len(chunk) < want:
                break
        if left:
            raise IngestError(f"{_show(path)}: file changed size while being read")
    finally:
        os.close(fd)


def regular_files(root: bytes) -> Iterator[tuple[bytes, int]]:
    """Every regular file under directory ``root`` with its size, in NAR order.

    Raises :class:`OSError` on an entry it cannot list or stat.
    """
    stack: list[Iterator[os.DirEntry[bytes]]] = []
    with os.scandir(root) as it:
        stack.append(iter(sorted(it, key=lambda entry: entry.name)))
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif entry.is_dir(follow_symlinks=False):
            with os.scandir(entry.path) as it:
                stack.append(iter(sorted(it, key=lambda entry: entry.name)))
        elif entry.is_file(follow_symlinks=False):
            yield entry.path, entry.stat(follow_symlinks=False).st_size


class _Prefetcher:
    """Warms the page cache for the small files the walker reads next.

    Reading many small files from the disk one after the other waits on
    each in turn; this thread walks the same order ahead of the walker and
    asks the kernel to read each small file (``POSIX_FADV_WILLNEED``) without
    waiting, so the disk works on many at once. It is only started once a
    read is seen to wait on the disk: on a cached tree it would only cost
    syscalls. Everything it does is advisory, so it ignores every error.
    """

    def __init__(self, root: bytes, walker_at: int) -> None:
        self._cond = threading.Condition()
        self._walker_at = walker_at  # regular files the walker has read
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, args=(root, walker_at), name="tvixmount-prefetch"
        )
        self._thread.start()

    def advance(self, walker_at: int) -> None:
        with self._cond:
            self._walker_at = walker_at
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _run(self, root: bytes, skip: int) -> None:
        try:
            for index, (path, size) in enumerate(regular_files(root)):
                if index < skip:
                    continue
                with self._cond:
                    while index >= self._walker_at + _PREFETCH_AHEAD and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        return
                if size <= SMALL_FILE:
                    _advise_willneed(path)
        except OSError:
            pass  # the walker reports whatever is wrong with the tree


def _in_page_cache(path: bytes) -> bool:
    """Whether the first page of the file at ``path`` is in the page cache.

    ``RWF_NOWAIT`` reads only what is cached (a miss also starts reading the
    page in, as readahead would). Where the filesystem cannot
    tell (NFS, FUSE refuse the flag) or the file is gone, the answer is no:
    the caller then trusts its timing.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
    except OSError:  # BlockingIOError: not cached
        return False
    finally:
        os.close(fd)
    return True


def _advise_willneed(path: bytes) -> None:
    try:
        # Non-blocking: the entry may have been replaced by a FIFO meanwhile.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Walker:
    """Walks a tree in NAR order (blocking): hashes its NAR, builds its records
    and ships every file's bytes to ``ship`` in batches of jobs."""

    def __init__(
        self, nar: _NarHash, ship: Callable[[list[_Job]], None], stopped: Callable[[], bool]
    ) -> None:
        self._nar = nar
        self._ship = ship
        self._stopped = stopped
        self._batch: list[_Job] = []
        self._batch_bytes = 0
        self._root = b""
        self._files_read = 0
        self._prefetcher: _Prefetcher | None = None
        self._maybe_cold = False  # the last small file read slowly

    def close(self) -> None:
        """Stop the prefetcher, if one was started."""
        if self._prefetcher is not None:
            self._prefetcher.stop()
            self._prefetcher = None

    def _job(self, record: _FileRecord, data: bytes) -> None:
        self._batch.append((record, data))
        self._batch_bytes += len(data)
        if self._batch_bytes >= _BATCH_BYTES or len(self._batch) >= _BATCH_JOBS:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._ship(batch)

    def _file(self, path: bytes, name: bytes, st: os.stat_result) -> _FileRecord:
        nar = self._nar
        size = st.st_size
        executable = bool(st.st_mode & stat.S_IXUSR)
        nar.tokens(wire.regular_header(executable, size))
        record = _FileRecord(name, size, executable)
        chunks: Iterable[bytes]
        if size <= SMALL_FILE:
            if self._maybe_cold and self._prefetcher is None:
                self._maybe_cold = False
                if not _in_page_cache(path):
                    self._start_prefetcher()
            started = time.perf_counter()
            # One job per small file, read whole (a single chunk is joined without a copy).
            chunks = (b"".join(_read_file(path, size)),)
            if time.perf_counter() - started > _COLD_READ:
                self._maybe_cold = True
        else:
            chunks = _read_file(path, size)
        for chunk in chunks:
            nar.contents(chunk)
            self._job(record, chunk)
        nar.tokens(wire.regular_trailer(size))
        self._files_read += 1
        if self._prefetcher is not None:
            self._prefetcher.advance(self._files_read)
        return record

    def _start_prefetcher(self) -> None:
        if os.path.isdir(self._root):
            self._prefetcher = _Prefetcher(self._root, self._files_read + 1)

    def walk(self, root: bytes, name: bytes) -> _Record:
        """The tree's root record; every file's jobs are shipped or pending a flush."""
        nar = self._nar
        self._root = root
        nar.tokens(wire.HEADER)
        # An explicit stack: depth is bounded by PATH_MAX, not the recursion limit.
        stack: list[tuple[bytes, Iterator[bytes], _DirRecord]] = []
        path, entry_name = root, name
        top: _Record | None = None
        while True:
            # Checked per entry: a tree of empty files or directories ships nothing.
            if self._stopped():
                raise _StorerStopped
            st = _lstat(path)
            record: _Record
            if stat.S_ISDIR(st.st_mode):
                nar.tokens(wire.DIRECTORY_PREFIX)
                record = _DirRecord(entry_name)
            elif stat.S_ISREG(st.st_mode):
                record = self._file(path, entry_name, st)
            elif stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(path)
                except OSError as exc:
                    raise IngestError(
                        f"{_show(path)}: cannot read symlink: {exc.strerror}"
                    ) from None
                nar.tokens(wire.symlink(target))
                record = SymlinkNode(entry_name, target)
            else:
                raise IngestError(f"{_show(path)}: cannot import {_kind(st.st_mode)}")
            if stack:
                stack[-1][2].children.append(record)
            else:
                top = record
            entry_open = bool(stack)
            if isinstance(record, _DirRecord):
                stack.append((path, iter(_list(path)), record))
                entry_open = False
            # Move on to the next entry, closing each finished entry and directory.
            while stack:
                if entry_open:
                    nar.tokens(wire.ENTRY_CLOSE)
                parent, children, _ = stack[-1]
                child = next(children, None)
                if child is not None:
                    nar.tokens(wire.entry_header(child))
                    path, entry_name = os.path.join(parent, child), child
                    break
                stack.pop()
                nar.tokens(wire.CLOSE)
                entry_open = bool(stack)
            else:
                assert top is not None
                return top


def _leaf(record: _FileRecord | SymlinkNode) -> Node:
    if isinstance(record, SymlinkNode):
        return record
    assert record.digest is not None, "every blob finished before the tree is built"
    return FileNode(record.name, record.digest, record.size, record.executable)


def _build(root: _Record, out: dict[B3Digest, Directory]) -> Node:
    """Nodes from records, bottom-up; Directories land in ``out`` leaves first."""
    if not isinstance(root, _DirRecord):
        return _leaf(root)
    stack: list[tuple[_DirRecord, Iterator[_Record], list[Node]]]
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


@runtime_checkable
class PutsMany(Protocol):
    """A blob service that stores whole blobs together faster than one by one
    (the embedded store makes a group of small blobs durable with one wait)."""

    async def put_many(self, blobs: Sequence[bytes]) -> list[B3Digest]:
        """Store each of ``blobs``; returns their digests, in order, once all are stored."""
        ...


class _Storer:
    """Consumes walker batches on the trio loop, setting each file record's digest.

    Small files are stored in groups, each group by a task of its own that
    stores its files with one ``put_many`` or else one after the other; big
    files stream through one writer in order and only their completion runs
    in a task.
    ``MAX_PENDING_BLOBS`` bounds the tasks, and with them memory.
    """

    def __init__(self, blobs: BlobService, progress: Progress | None) -> None:
        self._blobs = blobs
        self._progress = progress
        self._slots = trio.Semaphore(MAX_PENDING_BLOBS)
        self._writer: BlobWriter | None = None  # a big file being streamed
        self._written = 0

    async def consume(self, handoff: _Handoff, nursery: trio.Nursery) -> None:
        try:
            async with handoff.receive:
                async for batch in handoff.receive:
                    await self._take(batch, nursery)
                    handoff.taken()
        except BaseException:
            if self._writer is not None:
                await self._writer.abort()
            raise
        finally:
            handoff.stop()

    async def _take(self, batch: list[_Job], nursery: trio.Nursery) -> None:
        group: list[_Job] = []
        group_bytes = 0
        for record, data in batch:
            if record.size > SMALL_FILE:
                await self._stream(record, data, nursery)
                continue
            group.append((record, data))
            group_bytes += len(data)
            if len(group) >= _GROUP_FILES or group_bytes >= _GROUP_BYTES:
                await self._spawn(nursery, functools.partial(self._store_group, group))
                group, group_bytes = [], 0
        if group:
            await self._spawn(nursery, functools.partial(self._store_group, group))

    async def _stream(self, record: _FileRecord, data: bytes, nursery: trio.Nursery) -> None:
        if self._writer is None:
            self._writer = await self._blobs.open_write()
            self._written = 0
        await self._writer.write(data)
        self._written += len(data)
        if self._progress is not None:
            self._progress(len(data))
        if self._written == record.size:
            writer, self._writer = self._writer, None
            await self._spawn(nursery, functools.partial(self._finish, writer, record))

    async def _spawn(self, nursery: trio.Nursery, task: Callable[[], Awaitable[None]]) -> None:
        """Start ``task`` once one of the ``MAX_PENDING_BLOBS`` slots is free."""
        await self._slots.acquire()
        nursery.start_soon(self._in_slot, task)

    async def _in_slot(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        finally:
            self._slots.release()

    @staticmethod
    async def _finish(writer: BlobWriter, record: _FileRecord) -> None:
        record.digest = await writer.finish()

    async def _store_group(self, group: list[_Job]) -> None:
        if isinstance(self._blobs, PutsMany):
            digests = await self._blobs.put_many([data for _record, data in group])
            for (record, data), digest in zip(group, digests, strict=True):
                record.digest = digest
                if self._progress is not None and data:
                    self._progress(len(data))
            return
        for record, data in group:
            record.digest = await put_stream(self._blobs, (data,) if data else ())
            if self._progress is not None and data:
                self._progress(len(data))


def sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report for ``group`` (nested groups flattened): its only one, or
    the first when all are tvixmount's own (several blob writes failing on one
    full disk say the same thing), else the group."""
    errors: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            errors.append(error)
    if len(errors) == 1 or all(isinstance(error, TvixmountError) for error in errors):
        return errors[0]
    return group


class _StorerStopped(Exception):
    """The storer stopped on an error of its own: nothing takes the walker's batches."""


class _Handoff:
    """Ships batches from the walker thread to the trio loop without a round trip.

    ``trio.from_thread.run(send.send, ...)`` would block the walker until the
    loop got round to the send, i.e. until the storer finished the batch it
    is in the middle of; here the walker only blocks once
    ``_BATCHES_IN_FLIGHT`` batches are shipped and not yet stored.
    """

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        # Unbounded on the trio side: ``_queued`` is the bound, kept by the walker.
        self._send, self.receive = trio.open_memory_channel[list[_Job]](math.inf)
        self._cond = threading.Condition()
        self._queued = 0
        self._stopped = False

    def ship(self, batch: list[_Job]) -> None:
        """Queue ``batch`` for the storer (walker thread)."""
        with self._cond:
            while self._queued >= _BATCHES_IN_FLIGHT and not self._stopped:
                self._cond.wait()
            if self._stopped:
                raise _StorerStopped
            self._queued += 1
        self._token.run_sync_soon(self._deliver, batch)

    def _deliver(self, batch: list[_Job]) -> None:
        # If the storer stopped, the batch is dropped: the walker learns of
        # it on its next ship.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._send.send_nowait(batch)

    def end(self) -> None:
        """No more batches (walker thread); runs after every batch already shipped."""
        self._token.run_sync_soon(self._send.close)

    def taken(self) -> None:
        """The storer is done with one batch (trio loop)."""
        with self._cond:
            self._queued -= 1
            self._cond.notify()

    def stopped(self) -> bool:
        """Whether the storer has stopped (walker thread): the walk is pointless then."""
        return self._stopped

    def stop(self) -> None:
        """The storer takes no more batches (trio loop): unblock the walker."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


def _produce(root: bytes, name: bytes, nar: _NarHash, handoff: _Handoff) -> _Record | None:
    """Run the walk in a worker thread, shipping jobs to the trio loop in batches.

    Returns the root record, or None if the storer stopped first (its error
    is the one the nursery reports).
    """
    walker = _Walker(nar, handoff.ship, handoff.stopped)
    try:
        root_record = walker.walk(root, name)
        walker.flush()
        return root_record
    except _StorerStopped:
        return None
    finally:
        walker.close()
        handoff.end()


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
    after each chunk (big files) or file (small ones).
    """
    root = os.fsencode(os.path.abspath(path))
    root_name = os.path.basename(root) if name is None else name
    nar = _NarHash()
    storer = _Storer(blobs, progress)
    handoff = _Handoff()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(storer.consume, handoff, nursery)
            root_record = await trio.to_thread.run_sync(_produce, root, root_name, nar, handoff)
    except BaseExceptionGroup as group:
        # Callers expect the one error that stopped the import, not trio's wrapping.
        raise sole_error(group) from None
    assert root_record is not None, "the walk finished, so the storer did not fail"
    built: dict[B3Digest, Directory] = {}
    node = _build(root_record, built)
    if built:
        await directories.put_many(list(built.values()))
    nar_sha256 = nar.digest()  # flushes pending tokens, so read the size after it
    return IngestedTree(node, nar.size, nar_sha256)

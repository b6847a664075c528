"""The embedded local store's castore half: blob files + SQLite directories.

Blobs are files named by their hex digest under ``blobs/xx/``. They are
written to a temp file, made durable and only then renamed into place, so a
crash never leaves a partial blob under its final name. Durability is a group
commit: blobs finished at about the same time (an import writes many at once)
share one ``syncfs`` of the store's filesystem instead of an fsync each, which
is what makes importing many small files fast. Readers verify a blob's BLAKE3
digest once per (file identity) before serving any byte of it; the result is
remembered in a bounded cache so re-opening a file does not re-hash it.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import blake3
import trio

from ..errors import IntegrityError, StoreError
from .digest import B3Digest
from .directory import Directory
from .directoryservice import check_closure, walk_breadth_first

_libc = ctypes.CDLL(None, use_errno=True)

# Blobs up to this size are hashed inline on the trio loop; bigger ones in a thread.
_INLINE_VERIFY_MAX = 1 << 20
_VERIFIED_CACHE_SIZE = 65536
# Blobs up to this size are collected in memory and written with one write(2).
_WRITE_BUFFER = 1 << 20


class LocalBlobReader:
    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    async def pread(self, offset: int, length: int) -> bytes | memoryview:
        """Served inline from the page cache; a read that would wait on the disk
        goes to a worker thread, so concurrent readers' disk reads overlap."""
        length = max(0, min(length, self._size - offset))
        buf = bytearray(length)
        try:
            got = os.preadv(self._fd, [buf], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            got = 0
        if got < length:
            rest = await trio.to_thread.run_sync(os.pread, self._fd, length - got, offset + got)
            buf[got : got + len(rest)] = rest
            got += len(rest)
        return memoryview(buf)[:got]

    async def aclose(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalBlobWriter:
    """Buffers small blobs in memory and streams big ones to a temp file."""

    def __init__(self, service: LocalBlobService) -> None:
        self._service = service
        self._hasher = blake3.blake3()
        self._parts: list[bytes] = []
        self._buffered = 0
        self._fd = -1
        self._tmp: Path | None = None

    async def write(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        if self._fd >= 0:
            self._write_out(data)
            return
        self._parts.append(bytes(data))
        self._buffered += len(data)
        if self._buffered > _WRITE_BUFFER:
            self._spill()

    def _spill(self) -> None:
        """Move the buffered bytes to a temp file; later writes go straight there."""
        self._fd, self._tmp = self._service.new_temp()
        data, self._parts = b"".join(self._parts), []
        self._write_out(data)

    def _write_out(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    async def finish(self) -> B3Digest:
        digest = B3Digest(self._hasher.digest())
        try:
            if self._fd < 0:
                self._spill()
            os.fchmod(self._fd, 0o444)
            os.close(self._fd)
            self._fd = -1
            assert self._tmp is not None
            await self._service.committer.commit(self._tmp, self._service.path_of(digest))
        except OSError as exc:
            await self.abort()
            raise StoreError(f"cannot store blob {digest}: {exc}") from exc
        return digest

    async def abort(self) -> None:
        self._parts = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


class _Batch:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: OSError | None = None


class GroupCommit:
    """Make finished temp files durable together, then rename them into place.

    The first caller becomes the leader and commits batches until none is
    pending; everyone returns once the batch holding their file is committed,
    so ``finish`` keeps its meaning ("the blob is durable and visible").
    """

    def __init__(self, sync_dir: Path) -> None:
        self._sync_dir = sync_dir
        self._pending: list[tuple[Path, Path]] = []
        self._batch = _Batch()
        self._leading = False
        self._made_dirs: set[Path] = set()

    async def commit(self, tmp: Path, final: Path) -> None:
        self._pending.append((tmp, final))
        batch = self._batch
        if not self._leading:
            self._leading = True
            try:
                while self._pending:
                    moves, self._pending = self._pending, []
                    current, self._batch = self._batch, _Batch()
                    try:
                        await trio.to_thread.run_sync(self._sync_and_rename, moves)
                    except OSError as exc:
                        current.error = exc
                    current.done.set()
            finally:
                self._leading = False
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def _sync_and_rename(self, moves: list[tuple[Path, Path]]) -> None:
        _syncfs(self._sync_dir, [tmp for tmp, _ in moves])
        for tmp, final in moves:
            if final.parent not in self._made_dirs:
                final.parent.mkdir(exist_ok=True)
                self._made_dirs.add(final.parent)
            # Replace even an existing blob file: the new bytes are verified by
            # construction, so putting a blob again heals a corrupted copy.
            os.replace(tmp, final)


def _syncfs(directory: Path, files: list[Path]) -> None:
    """One syncfs(2) for the filesystem holding ``directory``; fsync each file without it."""
    syncfs = getattr(_libc, "syncfs", None)
    if syncfs is not None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalBlobService:
    def __init__(self, root: Path) -> None:
        self.blob_dir = root / "blobs"
        self.tmp_dir = root / "tmp"
        self.committer = GroupCommit(self.tmp_dir)
        self._blob_root = str(self.blob_dir)
        self._temp_prefix = f"blob-{os.getpid()}-{id(self):x}-"
        self._temp_counter = itertools.count()
        self._verified: OrderedDict[B3Digest, tuple[int, int, int]] = OrderedDict()

    def new_temp(self) -> tuple[int, Path]:
        """A fresh temp file (unique per process and service, O_EXCL for safety)."""
        while True:
            path = self.tmp_dir / f"{self._temp_prefix}{next(self._temp_counter)}"
            try:
                return os.open(
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
                ), path
            except FileExistsError:
                continue

    def path_of(self, digest: B3Digest) -> Path:
        return Path(self._file_of(digest))

    def _file_of(self, digest: B3Digest) -> str:
        # Plain string formatting: pathlib costs more than the open(2) on this hot path.
        text = digest.hex()
        return f"{self._blob_root}/{text[:2]}/{text}"

    async def has(self, digest: B3Digest) -> bool:
        return self.path_of(digest).exists()

    async def open_read(self, digest: B3Digest) -> LocalBlobReader | None:
        try:
            fd = os.open(self._file_of(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot open blob {digest}: {exc}") from exc
        try:
            st = os.fstat(fd)
            await self._verify(digest, fd, st)
        except BaseException:
            os.close(fd)
            raise
        return LocalBlobReader(fd, st.st_size)

    async def _verify(self, digest: B3Digest, fd: int, st: os.stat_result) -> None:
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._verified.get(digest) == identity:
            self._verified.move_to_end(digest)
            return
        if st.st_size <= _INLINE_VERIFY_MAX:
            actual = _hash_fd(fd, st.st_size)
        else:
            actual = await trio.to_thread.run_sync(_hash_fd, fd, st.st_size)
        if actual != digest:
            raise IntegrityError(f"blob {digest} is corrupt: its bytes hash to {actual}")
        self._verified[digest] = identity
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)

    async def open_write(self) -> LocalBlobWriter:
        return LocalBlobWriter(self)

    async def chunks(self, digest: B3Digest) -> list[tuple[B3Digest, int]] | None:
        return [] if await self.has(digest) else None

    async def aclose(self) -> None:
        pass


def _hash_fd(fd: int, size: int) -> B3Digest:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO if size > (8 << 20) else 1)
    offset = 0
    while offset < size:
        data = os.pread(fd, 1 << 20, offset)
        if not data:
            break
        hasher.update(data)
        offset += len(data)
    return B3Digest(hasher.digest())


class LocalDirectoryService:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def _get(self, digest: B3Digest) -> Directory | None:
        row = self._db.execute(
            "SELECT data FROM directories WHERE digest = ?", (bytes(digest),)
        ).fetchone()
        if row is None:
            return None
        return Directory.parse_stored(row[0], digest)

    async def get(self, digest: B3Digest) -> Directory | None:
        try:
            return self._get(digest)
        except sqlite3.Error as exc:
            raise StoreError(f"local store: {exc}") from exc

    def get_recursive(self, root: B3Digest) -> AsyncIterator[Directory]:
        return walk_breadth_first(self.get, root)

    async def put_many(self, directories: Sequence[Directory]) -> B3Digest:
        try:
            batch = check_closure(directories, self._get)
            with self._db:
                self._db.executemany(
                    "INSERT OR IGNORE INTO directories (digest, data) VALUES (?, ?)",
                    [(bytes(d), directory.serialize()) for d, directory in batch.items()],
                )
        except sqlite3.Error as exc:
            raise StoreError(f"local store: {exc}") from exc
        return directories[-1].digest()

    async def aclose(self) -> None:
        pass

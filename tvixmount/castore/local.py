"""The embedded local store's castore half: blob files + SQLite directories.

Blobs are files named by their hex digest under ``blobs/xx/``. They are
written to a temp file, fsynced and renamed into place, so a crash never
leaves a partial blob under its final name. Readers verify a blob's BLAKE3
digest once per (file identity) before serving any byte of it; the result is
remembered in a bounded cache so re-opening a file does not re-hash it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import blake3
import trio

from ..errors import IntegrityError, StoreError
from .digest import B3Digest
from .directory import Directory
from .directoryservice import check_closure, walk_breadth_first

# Blobs up to this size are hashed inline on the trio loop; bigger ones in a thread.
_INLINE_VERIFY_MAX = 1 << 20
_VERIFIED_CACHE_SIZE = 65536


class LocalBlobReader:
    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    async def pread(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    async def aclose(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalBlobWriter:
    def __init__(self, service: LocalBlobService) -> None:
        self._service = service
        self._tmp = tempfile.NamedTemporaryFile(dir=service.tmp_dir, prefix="blob-", delete=False)
        self._hasher = blake3.blake3()

    async def write(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self._tmp.write(data)

    async def finish(self) -> B3Digest:
        digest = B3Digest(self._hasher.digest())
        try:
            # fsync blocks on the disk: in a worker thread, concurrent finishes
            # (an import of many small files) overlap and share journal commits.
            await trio.to_thread.run_sync(self._commit, self._service.path_of(digest))
        except OSError as exc:
            await self.abort()
            raise StoreError(f"cannot store blob {digest}: {exc}") from exc
        return digest

    def _commit(self, final: Path) -> None:
        self._tmp.flush()
        os.fsync(self._tmp.fileno())
        self._tmp.close()
        # Replace even an existing blob file: the new bytes are verified by
        # construction, so putting a blob again heals a corrupted copy.
        final.parent.mkdir(exist_ok=True)
        os.chmod(self._tmp.name, 0o444)
        os.replace(self._tmp.name, final)

    async def abort(self) -> None:
        self._tmp.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp.name)


class LocalBlobService:
    def __init__(self, root: Path) -> None:
        self.blob_dir = root / "blobs"
        self.tmp_dir = root / "tmp"
        self._verified: OrderedDict[B3Digest, tuple[int, int, int]] = OrderedDict()

    def path_of(self, digest: B3Digest) -> Path:
        text = digest.hex()
        return self.blob_dir / text[:2] / text

    async def has(self, digest: B3Digest) -> bool:
        return self.path_of(digest).exists()

    async def open_read(self, digest: B3Digest) -> LocalBlobReader | None:
        try:
            fd = os.open(self.path_of(digest), os.O_RDONLY | os.O_CLOEXEC)
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
        # Creating the temp file can wait on the journal behind other blobs'
        # fsyncs; in a thread, concurrent writers do not queue on the loop.
        return await trio.to_thread.run_sync(LocalBlobWriter, self)

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

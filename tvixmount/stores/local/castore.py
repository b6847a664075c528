"""The embedded local store's castore half: packed and file blobs + SQLite directories.

Small blobs (up to ``PACK_MAX``, one FUSE read) are appended to pack files
under ``packs/``; the ``packed_blobs`` table maps a digest to its pack,
offset and size. Packing keeps the files of one import next to each other
on disk, so a cold walk reads neighbours with readahead instead of paying a
random read for each blob's dentry, inode and data. Each service instance
appends only to packs it created itself (unique name, ``O_EXCL``), so
processes importing into one store never share a pack. Bigger blobs are
files named by their hex digest under ``blobs/xx/``, written to a temp file,
made durable and only then renamed into place.

Durability is a group commit: blobs finished at about the same time (an
import writes many at once) share one sync, after which the batch's pack
rows are inserted in one SQLite transaction and its files renamed into
place. ``finish`` returns only once its blob is durable and visible; a crash
leaves at most unreferenced bytes at the end of a pack, which nothing reads.

Readers verify a blob's BLAKE3 digest once per identity of the file holding
it (inode, size, mtime) before serving any byte of it; the result and the
blob's location are remembered in a bounded cache, so a warm re-open of a
packed blob costs one ``fstat`` of the already open pack: no query, no
``open(2)``, no re-hash.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import itertools
import os
import secrets
import sqlite3
import stat
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from ... import loopless
from ...castore.blobservice import put_stream
from ...castore.digest import B3Digest
from ...castore.directory import Directory
from ...castore.directoryservice import check_closure, walk_breadth_first
from ...errors import IntegrityError, StoreError
from ...libc import libc
from .lease import Lease, write_transaction

if TYPE_CHECKING:  # imported where used: a loop-less copy reads the store without trio
    import trio

# Blobs up to this size go to packs: one FUSE read serves them whole.
PACK_MAX = 128 << 10
# A pack that reached this size is left alone; the next blob starts a new one.
PACK_ROLLOVER = 1 << 30
# Blobs up to this size are hashed inline on the trio loop; bigger ones in a thread.
_INLINE_VERIFY_MAX = 1 << 20
# Verified blobs remembered, about 300 bytes each. A walk of a store cycles
# through every blob in it, and a plain LRU smaller than that cycle never
# hits: each open would hash its blob again. So once full, only every
# _VERIFIED_ADMIT-th newly verified blob displaces the least recently opened
# one; the rest stay cached and a cycle too big to hold still mostly hits.
_VERIFIED_CACHE_SIZE = 1 << 17
_VERIFIED_ADMIT = 8
# A pack holds the blobs of an import in the order they were read, which is
# the order a walk of the same trees reads them back. Readers share one fd per
# pack and jump between files, so the kernel sees no sequential stream and
# would read each small blob with its own disk request; instead, a read that
# has to go to the disk also starts reading what follows it in the pack.
_PACK_READ_AHEAD = 1 << 20
# Blobs up to this size are collected in memory and written with one write(2).
_WRITE_BUFFER = 1 << 20
# Chunks written from this size on are hashed (and written out or kept) in a thread.
_THREADED_WRITE_MIN = 64 << 10

# A big blob's temp file is handed to writeback in steps of this size.
_WRITEBACK_STEP = 8 << 20
# sync_file_range(2): start writeback of the range's dirty pages, do not wait.
_SYNC_FILE_RANGE_WRITE = 2

# A commit of up to this many blob files fsyncs each; more share one syncfs.
_FSYNC_FILES_MAX = 8

# Digests looked up in one query (SQLite allows 32766 parameters).
_QUERY_KEYS = 512


class _LookUp(enum.Enum):
    LOOK_UP = enum.auto()


# A blob's packed row as its caller knows it: the row's generation, None (no
# row), or _LOOK_UP (not looked up yet).
_LOOK_UP = _LookUp.LOOK_UP
_Packed = int | None | _LookUp


class _PackGone(StoreError):
    """A recorded pack file is not there (gc removes packs whose blobs it moved)."""


@dataclass(frozen=True)
class BlobLocation:
    """Where a blob's bytes lie: ``size`` bytes at ``offset`` of the file at ``path``."""

    path: Path
    offset: int
    size: int


class LocalBlobReader:
    """Reads ``size`` bytes at ``base`` of ``fd``: a blob file it owns, or a shared pack.

    ``data``, when given, is the blob's verified content already in memory
    (read to verify it): reads are then served from it without a syscall.
    """

    def __init__(
        self, fd: int, base: int, size: int, *, owns_fd: bool, ahead: int, data: memoryview | None
    ) -> None:
        self._fd = fd
        self._base = base
        self._size = size
        self._owns_fd = owns_fd
        self._ahead = ahead
        self._data = data
        # This reader's disk reads go one at a time, in the order they came
        # (trio's locks are fair). The kernel sends a sequential reader's READs
        # two at a time; two preads racing on one fd made the kernel's
        # readahead of the blob file see an out-of-order pattern, and then
        # every 1 MiB was a synchronous disk read: a cold 256 MiB read ran at
        # 650-800 MB/s in a third of the runs, else 1,750-1,950 (READ p50
        # 1.55 ms against 0.55). In order, 8 of 8 traced runs were fast.
        # Reads the page cache answers take no turn (acquiring one yields), so
        # the lock is made at the first read that goes to the disk: most opens
        # never need one.
        self._disk: trio.Lock | None = None

    @classmethod
    def of_file(cls, fd: int, size: int) -> LocalBlobReader:
        """A blob file, closed with the reader; the kernel's own readahead serves it."""
        return cls(fd, 0, size, owns_fd=True, ahead=0, data=None)

    @classmethod
    def in_pack(
        cls, pack: _Pack, offset: int, size: int, data: memoryview | None = None
    ) -> LocalBlobReader:
        """A blob in a pack that stays open; disk reads also read ahead in the pack."""
        return cls(pack.fd, offset, size, owns_fd=False, ahead=_PACK_READ_AHEAD, data=data)

    @property
    def size(self) -> int:
        return self._size

    def _disk_turn(self) -> AbstractAsyncContextManager[object]:
        """This reader's turn to read from the disk (without an event loop,
        loopless, reads are serial anyway)."""
        if self._disk is None:
            if loopless.active():
                return contextlib.nullcontext()
            import trio

            self._disk = trio.Lock()
        return self._disk

    async def pread(self, offset: int, length: int) -> bytes | memoryview:
        """Served inline from the page cache; a read that would wait on the disk
        goes to a worker thread, so concurrent readers' disk reads overlap."""
        length = max(0, min(length, self._size - offset))
        if self._data is not None:
            return self._data[offset : offset + length]
        return await _pread_nowait(
            self._fd, length, self._base + offset, self._ahead, self._disk_turn
        )

    async def aclose(self) -> None:
        if self._owns_fd and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._data = None


def _read_ahead_and_pread(fd: int, length: int, offset: int, ahead: int) -> bytes:
    if ahead:
        os.posix_fadvise(fd, offset, ahead, os.POSIX_FADV_WILLNEED)
    return os.pread(fd, length, offset)


async def _pread_nowait(
    fd: int,
    length: int,
    offset: int,
    ahead: int = 0,
    disk: Callable[[], AbstractAsyncContextManager[object]] = contextlib.nullcontext,
) -> memoryview:
    """``length`` bytes at ``offset``: inline from the page cache, else in a thread.

    ``ahead``: on a disk read, also start reading that many bytes from
    ``offset`` into the page cache. ``disk()``: held while reading from the disk.
    """
    buf = bytearray(length)
    try:
        got = os.preadv(fd, [buf], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        got = 0
    except OSError as exc:
        # tmpfs (and NFS, FUSE) refuse RWF_NOWAIT: read the plain way, in a thread.
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        got = 0
    if got < length:
        async with disk():
            while got < length:
                rest = await loopless.to_thread(
                    _read_ahead_and_pread, fd, length - got, offset + got, ahead
                )
                if not rest:
                    break
                buf[got : got + len(rest)] = rest
                got += len(rest)
    return memoryview(buf)[:got]


class LocalBlobWriter:
    """Buffers small blobs in memory and streams big ones to a temp file.

    Chunks from ``_THREADED_WRITE_MIN`` on are hashed (and written) in a
    worker thread, and a buffered blob too big for a pack goes to its temp
    file there at ``finish``: BLAKE3 and write(2) release the GIL, so they
    overlap with whatever the trio loop does meanwhile (a NAR parse, an
    import's reading and SHA-256) instead of stalling it.
    """

    def __init__(self, service: LocalBlobService) -> None:
        self._service = service
        self._hasher = blake3.blake3()
        self._parts: list[bytes] = []
        self._buffered = 0
        self._fd = -1
        self._tmp: Path | None = None
        self._written = 0  # bytes in the temp file
        self._flushed = 0  # of which the kernel was asked to start writing back

    async def write(self, data: bytes | memoryview) -> None:
        try:
            step = self._hash_and_write_out if self._fd >= 0 else self._hash_and_keep
            if len(data) >= _THREADED_WRITE_MIN:
                await loopless.to_thread(step, data)
            else:
                step(data)
            if self._fd < 0 and self._buffered > _WRITE_BUFFER:
                await loopless.to_thread(self._spill)
        except OSError as exc:  # the disk is full, the store read-only, ...
            await self.abort()
            raise StoreError(f"cannot write a blob to {self._service.tmp_dir}: {exc}") from exc

    def digest(self) -> B3Digest:
        """The digest of the bytes written so far (what ``finish`` will return)."""
        return B3Digest(self._hasher.digest())

    def _spill(self) -> None:
        """Move the buffered bytes to a temp file; later writes go straight there."""
        self._fd, self._tmp = self._service.new_temp()
        data, self._parts = b"".join(self._parts), []
        self._write_out(data)

    def _hash_and_keep(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self._parts.append(bytes(data))
        self._buffered += len(data)

    def _hash_and_write_out(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self._write_out(data)

    def _write_out(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._written += len(data)
        if self._written - self._flushed >= _WRITEBACK_STEP:
            # The disk writes what is done while the rest is hashed and written:
            # the commit's sync then waits for the tail only, not the whole file.
            _start_writeback(self._fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def _close_temp(self) -> None:
        """Spill what is buffered if need be, and close the temp file read-only."""
        if self._fd < 0:
            self._spill()
        os.fchmod(self._fd, 0o444)
        os.close(self._fd)
        self._fd = -1

    async def finish(self) -> B3Digest:
        digest = self.digest()
        try:
            if self._fd < 0 and self._buffered <= PACK_MAX:
                data, self._parts = b"".join(self._parts), []
                await self._service.put_packed(digest, data)
                return digest
            await loopless.to_thread(self._close_temp)
            assert self._tmp is not None
            await self._service.commit_file(self._tmp, self._service.path_of(digest))
            self._tmp = None
        except (OSError, sqlite3.Error) as exc:
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


@dataclass(eq=False, slots=True)
class _Pack:
    id: int
    path: Path
    fd: int
    # The identity last seen, shared by every blob verified at it (memory);
    # no file has inode 0, so the initial value matches none.
    identity: tuple[int, int, int] = (0, 0, 0)

    def current_identity(self, st: os.stat_result) -> tuple[int, int, int]:
        identity = _identity(st)
        if identity != self.identity:
            self.identity = identity
        return self.identity


@dataclass(slots=True)
class _Known:
    """A verified blob: where it lies and the identity of the file it was verified in."""

    pack: _Pack | None  # None: a blob file
    offset: int
    size: int
    identity: tuple[int, int, int]


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(eq=False)
class _Batch:
    """Blobs finished while the previous batch was being made durable."""

    # Made on first use: every store opens with an empty batch, a loop-less read included.
    _done: trio.Event | None = None
    error: OSError | sqlite3.Error | None = None
    moves: list[tuple[Path, Path]] = field(default_factory=list)
    rows: dict[B3Digest, tuple[int, int, int]] = field(default_factory=dict)
    packs: set[_Pack] = field(default_factory=set)
    # Packed blobs' bytes, written when the batch is committed, just before
    # the sync: one pwrite per run of appends instead of one per blob.
    # (pack, offset, bytes); consecutive appends to one pack extend one run.
    writes: list[tuple[_Pack, int, bytearray]] = field(default_factory=list)
    sync_pack_dir: bool = False

    @property
    def done(self) -> trio.Event:
        if self._done is None:
            import trio

            self._done = trio.Event()
        return self._done

    def empty(self) -> bool:
        return not self.moves and not self.rows


class LocalBlobService:
    def __init__(
        self,
        root: Path,
        db: sqlite3.Connection,
        lease: Lease | None = None,
        read_only: bool = False,
    ) -> None:
        self.blob_dir = root / "blobs"
        self.tmp_dir = root / "tmp"
        self.pack_dir = root / "packs"
        self.read_only = read_only
        self._db = db
        self._lease = lease or Lease(db)
        self._blob_root = str(self.blob_dir)
        self._temp_prefix = f"blob-{os.getpid()}-{id(self):x}-"
        self._temp_counter = itertools.count()
        self._verified: OrderedDict[B3Digest, _Known] = OrderedDict()
        self._declined = 0
        # Every pack this service has read or written, by id; fds live until aclose.
        self._packs: dict[int, _Pack] = {}
        self._appending: _Pack | None = None
        self._append_at = 0
        self._batch = _Batch()
        # Packed blobs appended but not yet committed, so a second put waits instead.
        self._in_flight: dict[B3Digest, _Batch] = {}
        self._leader_gone: trio.Event | None = None
        self._made_dirs: set[Path] = set()

    # --- locating ----------------------------------------------------------

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
        """Where the blob's file is (or would be); small blobs live in packs instead."""
        return Path(self._file_of(digest))

    def _file_of(self, digest: B3Digest) -> str:
        # Plain string formatting: pathlib costs more than the open(2) on this hot path.
        text = digest.hex()
        return f"{self._blob_root}/{text[:2]}/{text}"

    def _query_one(self, sql: str, *params: object) -> Any:
        try:
            return self._db.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"local store: {exc}") from exc

    def _packed_row(self, digest: B3Digest) -> tuple[int, int, int] | None:
        row: tuple[int, int, int] | None = self._query_one(
            "SELECT pack, offset, size FROM packed_blobs WHERE digest = ?", bytes(digest)
        )
        if row is not None and not (
            isinstance(row[1], int)
            and isinstance(row[2], int)
            and row[1] >= 0
            and 0 <= row[2] <= PACK_MAX
        ):
            raise IntegrityError(f"local store: the pack index entry of blob {digest} is corrupt")
        return row

    def location_of(self, digest: B3Digest) -> BlobLocation | None:
        """Where the stored bytes of a blob lie (the seam tests corrupt them through)."""
        row = self._packed_row(digest)
        if row is not None:
            pack, offset, size = row
            return BlobLocation(self._pack(pack).path, offset, size)
        path = self.path_of(digest)
        try:
            return BlobLocation(path, 0, path.stat().st_size)
        except FileNotFoundError:
            return None

    def _pack(self, pack_id: int) -> _Pack:
        """The pack with this id, its read fd opened on first use."""
        pack = self._packs.get(pack_id)
        if pack is not None:
            return pack
        row = self._query_one("SELECT name FROM packs WHERE id = ?", pack_id)
        if row is None:
            raise StoreError(f"local store: pack {pack_id} is referenced but not recorded")
        path = self.pack_dir / row[0]
        try:
            fd = open_regular(path)
        except FileNotFoundError:
            raise _PackGone(f"pack {path} is missing") from None
        except OSError as exc:
            raise StoreError(f"cannot open pack {path}: {exc.strerror}") from None
        pack = self._packs[pack_id] = _Pack(pack_id, path, fd)
        return pack

    # --- reading -----------------------------------------------------------

    async def has(self, digest: B3Digest) -> bool:
        if digest in self._verified or self._packed_row(digest) is not None:
            return True
        return os.path.exists(self._file_of(digest))

    async def open_read(self, digest: B3Digest) -> LocalBlobReader | None:
        known = self._verified.get(digest)
        # The warm path: the pack is open already, and unchanged since it was verified.
        if (
            known is not None
            and known.pack is not None
            and _identity(os.fstat(known.pack.fd)) == known.identity
        ):
            self._verified.move_to_end(digest)
            return LocalBlobReader.in_pack(known.pack, known.offset, known.size)
        row = self._packed_row(digest)
        if row is None:
            return await self._open_file(digest)
        try:
            return await self._open_packed(digest, *row)
        except _PackGone:
            # gc may have moved the blob to a new pack and removed the old one meanwhile.
            moved = self._packed_row(digest)
            if moved is None or moved[0] == row[0]:
                raise
            return await self._open_packed(digest, *moved)

    async def _open_packed(
        self, digest: B3Digest, pack_id: int, offset: int, size: int
    ) -> LocalBlobReader:
        pack = self._pack(pack_id)
        try:
            st = os.fstat(pack.fd)
            data = await _pread_nowait(pack.fd, size, offset, _PACK_READ_AHEAD)
        except OSError as exc:
            raise StoreError(f"cannot read blob {digest} from {pack.path}: {exc}") from exc
        self._check(digest, B3Digest(blake3.blake3(data).digest()))
        self._remember(digest, _Known(pack, offset, size, pack.current_identity(st)))
        return LocalBlobReader.in_pack(pack, offset, size, data)

    async def _open_file(self, digest: B3Digest) -> LocalBlobReader | None:
        try:
            fd = open_regular(self._file_of(digest))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot open blob {digest}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            await self._verify_file(digest, fd, st)
            if st.st_size > PACK_MAX:
                # Big files are mostly read front to back: ask for more readahead.
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except BaseException:
            os.close(fd)
            raise
        return LocalBlobReader.of_file(fd, st.st_size)

    async def _verify_file(self, digest: B3Digest, fd: int, st: os.stat_result) -> None:
        identity = _identity(st)
        known = self._verified.get(digest)
        if known is not None and known.pack is None and known.identity == identity:
            self._verified.move_to_end(digest)
            return
        if st.st_size <= _INLINE_VERIFY_MAX:
            actual = _hash_fd(fd, st.st_size)
        else:
            actual = await loopless.to_thread(_hash_fd, fd, st.st_size)
        self._check(digest, actual)
        self._remember(digest, _Known(None, 0, st.st_size, identity))

    @staticmethod
    def _check(digest: B3Digest, actual: B3Digest) -> None:
        if actual != digest:
            raise IntegrityError(f"blob {digest} is corrupt: its bytes hash to {actual}")

    def _remember(self, digest: B3Digest, known: _Known) -> None:
        if digest not in self._verified and len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._declined += 1
            if self._declined % _VERIFIED_ADMIT:
                return
            self._verified.popitem(last=False)
        self._verified[digest] = known
        self._verified.move_to_end(digest)

    # --- writing -----------------------------------------------------------

    async def open_write(self) -> LocalBlobWriter:
        return LocalBlobWriter(self)

    async def put_packed(self, digest: B3Digest, data: bytes) -> None:
        """Append a small blob to this service's pack; returns once it is durable."""
        batch = await self._stage_packed(digest, data)
        if batch is not None:
            await self._commit(batch)

    async def put_many(self, blobs: Sequence[bytes]) -> list[B3Digest]:
        """Store whole blobs; returns their digests once all are durable.

        The packed ones wait for their commits together: stored one after the
        other, each waited for a commit (a sync) of its own, so an import's
        small files went at one per sync per storing task.
        """
        import trio

        digests = [
            B3Digest(blake3.blake3(data).digest()) if len(data) <= PACK_MAX else None
            for data in blobs
        ]
        # One query for the group's packed rows, not one per blob.
        packed = self._packed_gens([bytes(d) for d in digests if d is not None])
        pending: dict[int, tuple[B3Digest, _Batch]] = {}
        try:
            for index, (digest, data) in enumerate(zip(digests, blobs, strict=True)):
                if digest is None:
                    digests[index] = await put_stream(self, (data,))
                    continue
                batch = await self._stage_packed(digest, data, packed.get(bytes(digest)))
                if batch is not None:
                    pending.setdefault(id(batch), (digest, batch))
        except BaseException:
            # What was appended is committed before the error goes on, as
            # with a put cancelled while committing: else it would wait for
            # whichever put commits next.
            with trio.CancelScope(shield=True):
                for _digest, batch in pending.values():
                    with contextlib.suppress(OSError, sqlite3.Error):
                        await self._commit(batch)
            raise
        for digest, batch in pending.values():
            try:
                await self._commit(batch)
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"cannot store blob {digest}: {exc}") from exc
        return [digest for digest in digests if digest is not None]

    def _packed_gens(self, keys: list[bytes]) -> dict[bytes, int]:
        """The generation of each of the blobs that has a packed row."""
        gens: dict[bytes, int] = {}
        try:
            for start in range(0, len(keys), _QUERY_KEYS):
                part = keys[start : start + _QUERY_KEYS]
                gens.update(
                    self._db.execute(
                        "SELECT digest, gen FROM packed_blobs WHERE digest IN"
                        f" ({','.join('?' * len(part))})",
                        part,
                    ).fetchall()
                )
        except sqlite3.Error as exc:
            raise StoreError(f"local store: {exc}") from exc
        return gens

    async def _stage_packed(
        self, digest: B3Digest, data: bytes, packed: _Packed = _LOOK_UP
    ) -> _Batch | None:
        """Append a small blob to the pending batch; returns the batch to wait
        for, or None if the blob is stored already. ``packed``: as for ``_reuse``."""
        batch = self._in_flight.get(digest)
        if batch is None:
            if await self._reuse(digest, packed):
                return None
            batch = self._in_flight.get(digest)  # another put may have begun meanwhile
        if batch is None:
            try:
                pack, offset = self._append(data)
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"cannot store blob {digest}: {exc}") from exc
            batch = self._in_flight[digest] = self._batch
            batch.rows[digest] = (pack.id, offset, len(data))
        return batch

    async def _reuse(self, digest: B3Digest, packed: _Packed = _LOOK_UP) -> bool:
        """Whether the blob is stored with the right bytes (a corrupt copy gets replaced).

        A stored copy is first marked with this process's generation, so a
        ``gc`` that runs before the PathInfo referring to it is written keeps
        it; only then is it looked at, so a copy ``gc`` removed just before is
        seen to be gone and written again. ``packed``: the blob's packed row
        (its generation), if the caller looked it up already.
        """
        gen = self._lease.gen
        key = bytes(digest)
        try:
            if packed is _LOOK_UP:
                row = self._db.execute(
                    "SELECT gen FROM packed_blobs WHERE digest = ?", (key,)
                ).fetchone()
            else:
                row = None if packed is None else (packed,)
            if row is not None:
                if row[0] < gen:
                    with self._db:
                        cursor = self._db.execute(
                            "UPDATE packed_blobs SET gen = max(gen, ?) WHERE digest = ?", (gen, key)
                        )
                    if not cursor.rowcount:
                        return False  # gc removed it just now
            else:
                # Not the verified-blob cache: gc may have removed what this process read.
                file = self._file_of(digest)
                if not os.path.exists(file):
                    return False
                with self._db:
                    self._touch_files([key], gen)
                if not os.path.exists(file):
                    return False  # gc removed it before the touch
        except sqlite3.Error as exc:
            raise StoreError(f"local store: {exc}") from exc
        try:
            reader = await self.open_read(digest)
        except IntegrityError:
            return False
        if reader is None:
            return False
        await reader.aclose()
        return True

    def _append(self, data: bytes) -> tuple[_Pack, int]:
        """Reserve room for ``data`` at the end of this service's current pack;
        the current batch writes it there when it is committed."""
        pack = self._appending
        if pack is None or self._append_at + len(data) > PACK_ROLLOVER:
            pack = self._new_pack()
        offset = self._append_at
        writes = self._batch.writes
        if writes and writes[-1][0] is pack and writes[-1][1] + len(writes[-1][2]) == offset:
            writes[-1][2].extend(data)
        else:
            writes.append((pack, offset, bytearray(data)))
            self._batch.packs.add(pack)
        self._append_at = offset + len(data)
        return pack, offset

    def _new_pack(self) -> _Pack:
        pack_id, path, fd = create_pack(self._db, self.pack_dir, f"{id(self):x}")
        pack = self._packs[pack_id] = _Pack(pack_id, path, fd)
        self._appending, self._append_at = pack, 0
        # The new name must be durable before any row points into the pack.
        self._batch.sync_pack_dir = True
        return pack

    async def commit_file(self, tmp: Path, final: Path) -> None:
        """Make a finished temp file durable and rename it to its final name."""
        batch = self._batch
        batch.moves.append((tmp, final))
        await self._commit(batch)

    async def _commit(self, batch: _Batch) -> None:
        """Wait until ``batch`` is committed, committing pending batches if no one else is.

        The first caller becomes the leader and commits the pending batch, its
        own (shielded from cancellation: others wait on it), then steps down,
        which wakes the waiters: those whose batch is still pending, the blobs
        finished meanwhile, choose a new leader among them. A leader committing
        until nothing was pending kept every waiter waiting for as long as
        concurrent writers kept finishing blobs (fetches of 8 paths at once all
        waited for the slowest). If it fails unexpectedly, the same happens.

        A waiter cancelled while its batch is pending still sees it committed
        (shielded) before it stops: since leaders step down after their own
        batch, no one else might commit it until the next put.
        """
        import trio

        while not batch.done.is_set():
            if self._leader_gone is not None:
                try:
                    await self._leader_gone.wait()
                except trio.Cancelled:
                    # Its error, if any, is not this cancelled caller's to report.
                    with trio.CancelScope(shield=True), contextlib.suppress(OSError, sqlite3.Error):
                        await self._commit(batch)
                    raise
            else:
                await self._lead(batch)
        if batch.error is not None:
            raise batch.error

    async def _lead(self, batch: _Batch) -> None:
        import trio

        self._leader_gone = gone = trio.Event()
        try:
            while not batch.done.is_set() and not self._batch.empty():
                current, self._batch = self._batch, _Batch()
                with trio.CancelScope(shield=True):
                    await self._commit_batch(current)
        finally:
            self._leader_gone = None
            gone.set()

    def _touch_files(self, digests: Sequence[bytes], gen: int) -> None:
        """Record that blob files are (about to be) this generation's (in a transaction)."""
        self._db.executemany(
            "INSERT INTO blob_files (digest, gen) VALUES (?, ?)"
            " ON CONFLICT (digest) DO UPDATE SET gen = max(gen, excluded.gen)",
            [(bytes(d), gen) for d in digests],
        )

    async def _commit_batch(self, batch: _Batch) -> None:
        try:
            gen = self._lease.gen
            if batch.moves:
                # Before the renames: a gc deciding about a file sees its new
                # generation, or removed the old copy before the rename.
                with self._db:
                    self._touch_files([bytes.fromhex(final.name) for _, final in batch.moves], gen)
            await loopless.to_thread(self._make_durable, batch)
            if batch.rows:
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO packed_blobs (digest, pack, offset, size, gen)"
                        " VALUES (?, ?, ?, ?, ?)",
                        [(bytes(d), *row, gen) for d, row in batch.rows.items()],
                    )
        except (OSError, sqlite3.Error) as exc:
            batch.error = exc
        except BaseException:
            batch.error = OSError("the blob commit was interrupted")
            raise
        finally:
            for digest in batch.rows:
                del self._in_flight[digest]
                # A put may have replaced a corrupt copy: verify the new location.
                self._verified.pop(digest, None)
            batch.done.set()

    def _make_durable(self, batch: _Batch) -> None:
        """Write and sync the batch's bytes, then rename its files into place (worker thread)."""
        for pack, offset, data in batch.writes:
            view = memoryview(data)
            while view:
                view = view[os.pwrite(pack.fd, view, offset + len(data) - len(view)) :]
        synced = bool(batch.moves) and _syncfs(self.tmp_dir, [tmp for tmp, _ in batch.moves])
        if not synced:
            for pack in batch.packs:
                os.fdatasync(pack.fd)
            if batch.sync_pack_dir:
                _fsync_dir(self.pack_dir)
        for tmp, final in batch.moves:
            if final.parent not in self._made_dirs:
                final.parent.mkdir(exist_ok=True)
                self._made_dirs.add(final.parent)
            # Replace even an existing blob file: the new bytes are verified by
            # construction, so putting a blob again heals a corrupted copy.
            os.replace(tmp, final)

    async def chunks(self, digest: B3Digest) -> list[tuple[B3Digest, int]] | None:
        return [] if await self.has(digest) else None

    def close(self) -> None:
        """Close the pack fds and drop the lease; open readers must not be used after this."""
        for pack in self._packs.values():
            os.close(pack.fd)
        self._packs.clear()
        self._appending = None
        self._verified.clear()
        self._lease.release()

    async def aclose(self) -> None:
        self.close()


def _syncfs(directory: Path, files: list[Path]) -> bool:
    """One syncfs(2) for the filesystem holding ``directory``; fsync each file without it,
    or when they are few.

    syncfs also waits for every other writer's dirty pages on the filesystem (a
    ``nix-store --add`` of a GiB just before, which does not sync): worth it only
    when it spares many fsyncs.

    Returns whether syncfs ran (it made every other write to the filesystem durable too).
    """
    syncfs = getattr(libc, "syncfs", None)
    if syncfs is not None and len(files) > _FSYNC_FILES_MAX:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if syncfs(fd) == 0:
                return True
        finally:
            os.close(fd)
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return False


def create_pack(db: sqlite3.Connection, pack_dir: Path, tag: str) -> tuple[int, Path, int]:
    """A new, empty pack file and its ``packs`` row: (id, path, read-write fd).

    The name starts with this process's pid: ``gc`` leaves alone the packs of
    processes still running, which may be appending to them.
    """
    pack_dir.mkdir(exist_ok=True)
    while True:
        name = f"{os.getpid()}-{tag}-{secrets.token_hex(8)}.pack"
        path = pack_dir / name
        try:
            # Read-only for everyone but this fd: nothing else ever writes to it.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        except FileExistsError:
            continue
        break
    try:
        with db:
            pack_id = db.execute("INSERT INTO packs (name) VALUES (?)", (name,)).lastrowid
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    assert pack_id is not None
    return pack_id, path, fd


def open_regular(path: str | Path) -> int:
    """A read-only fd of the regular file at ``path``; anything else is an OSError.

    Opened non-blocking, so a FIFO where a blob or pack should be fails here
    instead of hanging the open; the fd is made blocking again afterwards.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise OSError(errno.EINVAL, f"{path} is {kind}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing a range of the file to the disk, without waiting."""
    sync_file_range = getattr(libc, "sync_file_range", None)
    if sync_file_range is not None:
        sync_file_range(fd, ctypes.c_int64(offset), ctypes.c_int64(length), _SYNC_FILE_RANGE_WRITE)


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
    def __init__(self, db: sqlite3.Connection, lease: Lease | None = None) -> None:
        self._db = db
        self._lease = lease or Lease(db)

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
            gen = self._lease.gen
            # The check and the writes in one write transaction: a gc cannot
            # remove a stored child in between.
            with write_transaction(self._db):
                batch = check_closure(directories, self._get)
                self._db.executemany(
                    "INSERT INTO directories (digest, data, gen) VALUES (?, ?, ?)"
                    " ON CONFLICT (digest) DO UPDATE SET gen = max(gen, excluded.gen)",
                    [(bytes(d), directory.serialize(), gen) for d, directory in batch.items()],
                )
                # Stored children this batch reuses get this generation too: gc
                # keeps them and, through them, what they refer to.
                reused = {
                    bytes(child.digest)
                    for directory in batch.values()
                    for child in directory.directories
                    if child.digest not in batch
                }
                self._db.executemany(
                    "UPDATE directories SET gen = max(gen, ?) WHERE digest = ?",
                    [(gen, digest) for digest in reused],
                )
        except sqlite3.Error as exc:
            raise StoreError(f"local store: {exc}") from exc
        return directories[-1].digest()

    async def aclose(self) -> None:
        pass

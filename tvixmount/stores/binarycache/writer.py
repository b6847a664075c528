"""Writing a Nix binary cache the way Nix 2.8 does.

A cache holds ``nix-cache-info`` (``StoreDir: /nix/store``), one
``nar/<filehash>.nar<.xz|.zst|.bz2|>`` per path, named by the SHA-256 of its
compressed bytes, and ``<hash>.narinfo``. The narinfo is written last and
each object appears whole (a rename on a file system, one PUT on S3), so a
reader never finds a narinfo whose NAR is missing or half-written, whenever
the writer stops.

A NAR is streamed: the trio side produces it and a worker thread hashes
and compresses it, batch by batch, into a spool file whose bytes are hashed
as they are written, so memory stays flat whatever the NAR's size.
Compression runs beside the NAR's production, on both cores: zstd in
libzstd's worker threads; xz as ``xz -T2`` with 4 MiB blocks (a 52 MB NAR:
26.7 s with one thread, as Nix compresses, 10.6 s so, for 4% more bytes;
Python's lzma has no threaded encoder); bzip2 as the ``bzip2`` program.
Without those programs, Python's lzma and bz2 compress in the worker.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import fcntl
import hashlib
import lzma
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterable, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypeVar

import trio
import zstandard

from ... import nixbase32
from ...errors import IntegrityError, SigningKeyError, StoreError, StoreURLError
from ...nar.narinfo import Narinfo, NixHash
from ...pathinfo.model import PathInfo
from ...storepath import STORE_DIR, StorePath
from .url import CacheURL

if TYPE_CHECKING:  # cryptography costs 100 ms to import; only signing needs it
    from ...nar.signing import SecretKey

EXTENSIONS = {"none": "", "xz": ".xz", "zstd": ".zst", "bzip2": ".bz2"}
CACHE_INFO = "nix-cache-info"
_CACHE_INFO_TEXT = f"StoreDir: {STORE_DIR}\n".encode()
_MAX_CACHE_INFO = 1 << 16
# What Nix's S3 store sends as Content-Type for each kind of object.
CONTENT_TYPES = {
    "narinfo": "text/x-nix-narinfo",
    "nar": "application/x-nix-nar",
    CACHE_INFO: "text/x-nix-cache-info",
}
# Compressor programs, used when installed: xz with two threads, bzip2 beside the NAR's producer.
_PROGRAMS = {
    "xz": ("xz", "-6", "-T2", "--block-size=4MiB", "--stdout", "--quiet"),
    "bzip2": ("bzip2", "-9", "--stdout", "--quiet"),
}
# Level 3, as Nix; libzstd's default job for it held 200 MB of incompressible input in
# flight (RSS 231 MB copying a 96 MB NAR), 2 MiB jobs hold 64 MB for 0.4% more bytes.
_ZSTD = zstandard.ZstdCompressionParameters.from_level(3, threads=-1, job_size=2 << 20)
_COPY_SIZE = 1 << 20
_BATCH = 4 << 20  # NAR bytes per hand-over to the compressing thread
_PIPE_SIZE = 1 << 20  # the NAR pipe's buffer: fewer wake-ups between the two sides

Progress = Callable[[int], None]
_T = TypeVar("_T")


class CacheSink(Protocol):
    """Where a binary cache's objects are written: a directory or a bucket.

    Contract: ``put`` and ``commit`` make an object appear whole under its
    key or not at all; ``commit`` consumes the spool file (moves or uploads
    it, then it is gone); ``spool_dir`` is where spool files are made
    (beside the cache when a rename can move them in). Failures raise
    :class:`~tvixmount.errors.StoreError` naming ``describe(key)``.
    """

    def describe(self, key: str) -> str: ...

    async def exists(self, key: str) -> bool: ...

    async def read_small(self, key: str, limit: int) -> bytes | None: ...

    def spool_dir(self) -> Path: ...

    async def prepare(self) -> None:
        """Check the cache can be written (a bucket exists); make what a write needs."""
        ...

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def commit(self, spool: Path, key: str, content_type: str) -> None: ...

    async def aclose(self) -> None: ...


class FileSink:
    """A cache directory; objects appear by ``rename`` of a hidden temporary file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / PurePosixPath(key)

    def describe(self, key: str) -> str:
        return f"file://{self._path(key)}"

    async def exists(self, key: str) -> bool:
        return await trio.to_thread.run_sync(self._path(key).is_file)

    async def read_small(self, key: str, limit: int) -> bytes | None:
        def read() -> bytes | None:
            try:
                with open(self._path(key), "rb") as handle:
                    return handle.read(limit + 1)
            except FileNotFoundError:
                return None

        return await self._io(key, read)

    def spool_dir(self) -> Path:
        return self.root / "nar"

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        def write() -> None:
            target = self._path(key)
            fd, name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
            try:
                with open(fd, "wb") as handle:
                    handle.write(data)
                os.replace(name, target)
            except BaseException:
                os.unlink(name)
                raise

        await self._io(key, write)

    async def commit(self, spool: Path, key: str, content_type: str) -> None:
        await self._io(key, lambda: os.replace(spool, self._path(key)))

    async def _io(self, key: str, fn: Callable[[], _T]) -> _T:
        try:
            return await trio.to_thread.run_sync(fn)
        except OSError as exc:
            raise StoreError(f"{self.describe(key)}: {exc.strerror or exc}") from exc

    async def prepare(self) -> None:
        await self._io("nar", lambda: self.spool_dir().mkdir(parents=True, exist_ok=True))

    async def aclose(self) -> None:
        pass


# -- compression ----------------------------------------------------------------------------


class _HashingWriter:
    """The spool file, hashed and counted as the compressor writes it."""

    def __init__(self, handle: BinaryIO, hashed: bool = True) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256() if hashed else None
        self.size = 0

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        self.size += len(data)


class _Compressobj(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Encoder(Protocol):
    """Compresses into the spool file; called from one worker thread at a time."""

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None:
        """Everything written so far reaches the spool file."""
        ...

    def abort(self) -> None:
        """Stop at once (from any thread); the spool file is then garbage."""
        ...


class _LibraryEncoder:
    """None, zstd (libzstd's own worker threads compress), and Python's lzma/bz2 as fallbacks."""

    def __init__(self, compression: str, out: _HashingWriter) -> None:
        self._out = out
        self._encoder: _Compressobj | None = None
        if compression == "zstd":
            self._encoder = zstandard.ZstdCompressor(compression_params=_ZSTD).compressobj()
        elif compression == "xz":  # no xz program: one thread, as Nix compresses
            self._encoder = lzma.LZMACompressor(preset=6)
        elif compression == "bzip2":
            self._encoder = bz2.BZ2Compressor(9)

    def write(self, data: bytes) -> None:
        self._out.write(data if self._encoder is None else self._encoder.compress(data))

    def finish(self) -> None:
        if self._encoder is not None:
            self._out.write(self._encoder.flush())

    def abort(self) -> None:
        pass


class _ProcessEncoder:
    """A compressor program (xz, bzip2) fed through a pipe; a thread copies its output."""

    def __init__(self, argv: Sequence[str], out: _HashingWriter) -> None:
        self._name = argv[0]
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._process.stdin is not None
        with contextlib.suppress(OSError):  # a smaller pipe only costs wake-ups
            fcntl.fcntl(self._process.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        self._out = out
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=argv[0], daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            with stdout:
                while data := stdout.read(_COPY_SIZE):
                    self._out.write(data)
        except BaseException as exc:
            self._error = exc
            self._process.kill()  # its writer must not wait on a full pipe

    def write(self, data: bytes) -> None:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(data)
        except BrokenPipeError:
            self._wait()  # says why it stopped reading
            raise StoreError(f"{self._name} stopped reading its input") from None

    def finish(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._wait()

    def _wait(self) -> None:
        self._thread.join()
        status = self._process.wait()
        if self._error is not None:
            raise StoreError(f"writing the {self._name} output: {self._error}") from self._error
        if status != 0:
            raise StoreError(f"{self._name} exited with status {status}")

    def abort(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._thread.join()
        self._process.wait()


def _encoder(compression: str, out: _HashingWriter) -> _Encoder:
    program = _PROGRAMS.get(compression)
    if program is not None and shutil.which(program[0]) is not None:
        return _ProcessEncoder(program, out)
    return _LibraryEncoder(compression, out)


@dataclasses.dataclass(frozen=True)
class Spooled:
    """A NAR compressed into a spool file, with the digests of both."""

    path: Path
    nar_sha256: bytes
    nar_size: int
    file_sha256: bytes
    file_size: int


class _Spooler:
    """A worker thread that hashes the NAR and compresses it into the spool file, by batches."""

    def __init__(self, compression: str, handle: BinaryIO, progress: Progress) -> None:
        self._progress = progress
        # An uncompressed NAR's file hash is its NAR hash: one SHA-256 pass, not two.
        self._out = _HashingWriter(handle, hashed=compression != "none")
        self._encoder = _encoder(compression, self._out)
        self._nar_sha256 = hashlib.sha256()
        self._nar_size = 0
        self._error: BaseException | None = None
        self._token = trio.lowlevel.current_trio_token()
        self._queue: queue.SimpleQueue[tuple[list[bytes], trio.Event] | None] = queue.SimpleQueue()
        self._pending: trio.Event | None = None
        self._pending_size = 0
        self._thread = threading.Thread(target=self._run, name="spool", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            batch, done = work
            if self._error is None:
                try:
                    for chunk in batch:
                        self._nar_sha256.update(chunk)
                        self._nar_size += len(chunk)
                        self._encoder.write(chunk)
                except BaseException as exc:
                    self._error = exc
            with contextlib.suppress(trio.RunFinishedError):  # the run ended: nobody waits
                self._token.run_sync_soon(done.set)

    async def _settle(self) -> None:
        if self._pending is not None:
            await self._pending.wait()
            self._pending = None
        if self._error is not None:
            raise self._error
        # Progress is what the compressor took, not what was produced ahead of it.
        self._progress(self._pending_size)
        self._pending_size = 0

    async def feed(self, batch: list[bytes], size: int) -> None:
        """Hand a batch over once the previous one is done (one in the works at a time)."""
        await self._settle()
        self._pending = trio.Event()
        self._pending_size = size
        self._queue.put((batch, self._pending))

    async def finish(self, path: Path) -> Spooled:
        await self._settle()
        self._queue.put(None)
        await trio.to_thread.run_sync(self._thread.join)
        await trio.to_thread.run_sync(self._encoder.finish, abandon_on_cancel=True)
        nar_sha256 = self._nar_sha256.digest()
        file_sha256 = self._out.sha256.digest() if self._out.sha256 is not None else nar_sha256
        return Spooled(path, nar_sha256, self._nar_size, file_sha256, self._out.size)

    def abort(self) -> None:
        """Stop the encoder and the thread; then nothing writes to the spool file."""
        self._encoder.abort()
        self._queue.put(None)
        self._thread.join()


async def spool_nar(
    nar: AsyncIterable[bytes], compression: str, spool_dir: Path, progress: Progress
) -> Spooled:
    """Compress the NAR stream into a new file in ``spool_dir`` (removed again on any failure).

    The trio side gathers the NAR into batches of :data:`_BATCH` bytes and
    the worker hashes and compresses one batch while the next is produced:
    SHA-256, libzstd and file writes release the GIL, so the two overlap on
    two cores, at one thread hand-over per batch.
    """
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".nar", dir=spool_dir)
    spool = Path(name)
    done = False
    try:
        with open(fd, "wb") as handle:
            spooler = _Spooler(compression, handle, progress)
            try:
                batch: list[bytes] = []
                size = 0
                async for chunk in nar:
                    batch.append(chunk)
                    size += len(chunk)
                    if size >= _BATCH:
                        await spooler.feed(batch, size)
                        batch, size = [], 0
                await spooler.feed(batch, size)
                spooled = await spooler.finish(spool)
                done = True
            finally:
                if not done:
                    spooler.abort()
    finally:
        if not done:
            spool.unlink(missing_ok=True)
    return spooled


# -- the writer -----------------------------------------------------------------------------


def narinfo_of(info: PathInfo, spooled: Spooled, url: str, compression: str) -> Narinfo:
    """The narinfo Nix would write for ``info`` stored as ``spooled`` at ``url``."""
    kept = info.narinfo
    deriver = None
    if kept.deriver is not None:
        # tvix keeps a deriver's name without ".drv"; a narinfo names the file.
        deriver = StorePath(kept.deriver.digest, kept.deriver.name + ".drv")
    return Narinfo(
        store_path=info.store_path,
        url=url,
        nar_hash=kept.nar_sha256,
        nar_size=kept.nar_size,
        compression=compression,
        file_hash=NixHash("sha256", spooled.file_sha256),
        file_size=spooled.file_size,
        references=tuple(sorted(info.reference_paths)),
        deriver=deriver,
        signatures=kept.signatures,
        ca=kept.ca,
    )


def sign_all(narinfo: Narinfo, keys: Sequence[SecretKey]) -> Narinfo:
    if not keys:
        return narinfo
    from ...nar.signing import sign_narinfo

    for key in keys:
        narinfo = sign_narinfo(narinfo, key)
    return narinfo


class BinaryCacheWriter:
    """Adds store paths to a binary cache: NAR first, narinfo last, signed by ``keys``."""

    def __init__(self, sink: CacheSink, compression: str, keys: Sequence[SecretKey]) -> None:
        if compression not in EXTENSIONS:
            raise StoreURLError(
                f"{sink.describe('')}: cannot write compression={compression!r}; "
                f"one of {', '.join(EXTENSIONS)}"
            )
        self.sink = sink
        self.compression = compression
        self.keys = tuple(keys)

    async def prepare(self) -> None:
        """Check ``nix-cache-info`` (or write it, as Nix does for a new cache)."""
        await self.sink.prepare()
        text = await self.sink.read_small(CACHE_INFO, _MAX_CACHE_INFO)
        if text is None:
            await self.sink.put(CACHE_INFO, _CACHE_INFO_TEXT, CONTENT_TYPES[CACHE_INFO])
            return
        for line in text.decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key == "StoreDir" and value.strip() != STORE_DIR:
                raise StoreError(
                    f"{self.sink.describe(CACHE_INFO)}: the cache holds paths for store "
                    f"{value.strip()!r}, not {STORE_DIR}"
                )

    async def has(self, store_path: StorePath) -> bool:
        return await self.sink.exists(f"{store_path.encoded_digest}.narinfo")

    async def add(self, info: PathInfo, nar: AsyncIterable[bytes], progress: Progress) -> Narinfo:
        """Write ``info``'s NAR (the stream ``nar``), then its narinfo; the narinfo written.

        The NAR must hash to the PathInfo's NarHash and NarSize, else
        :class:`~tvixmount.errors.IntegrityError` and nothing is written.
        """
        spooled = await spool_nar(nar, self.compression, self.sink.spool_dir(), progress)
        try:
            expected = info.narinfo
            if (spooled.nar_sha256, spooled.nar_size) != (expected.nar_sha256, expected.nar_size):
                raise IntegrityError(
                    f"{info.store_path.absolute}: its NAR hashes to "
                    f"{NixHash('sha256', spooled.nar_sha256)} ({spooled.nar_size} bytes), but "
                    f"the store says {NixHash('sha256', expected.nar_sha256)} "
                    f"({expected.nar_size} bytes)"
                )
            url = f"nar/{nixbase32.encode(spooled.file_sha256)}.nar{EXTENSIONS[self.compression]}"
            # The same compressed bytes may already be there (another path, an earlier run).
            if not await self.sink.exists(url):
                await self.sink.commit(spooled.path, url, CONTENT_TYPES["nar"])
        finally:
            spooled.path.unlink(missing_ok=True)
        narinfo = sign_all(narinfo_of(info, spooled, url, self.compression), self.keys)
        key = f"{info.store_path.encoded_digest}.narinfo"
        await self.sink.put(key, narinfo.format().encode(), CONTENT_TYPES["narinfo"])
        return narinfo

    async def aclose(self) -> None:
        await self.sink.aclose()


def read_secret_key(path: Path) -> SecretKey:
    """A Nix secret key file (``NAME:BASE64``)."""
    from ...nar.signing import SecretKey

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"cannot read secret key file {str(path)!r}: {exc}") from None
    return SecretKey.parse(text)


def open_writer(url: str, keys: Sequence[SecretKey] = ()) -> BinaryCacheWriter:
    """A writer for the ``file://`` or ``s3://`` cache at ``url``, signing with ``keys``
    and the key file its ``secret-key=`` names; ``compression=`` as Nix takes it."""
    cache = CacheURL.parse(url)
    sink: CacheSink
    if cache.scheme == "file":
        sink = FileSink(Path(cache.path))
    elif cache.scheme == "s3":
        from .s3 import S3Transport  # boto3: only for s3:// caches

        sink = S3Transport(cache)
    else:
        raise StoreURLError(f"{url}: tvixmount writes file:// and s3:// binary caches only")
    all_keys = list(keys)
    if cache.secret_key is not None:
        all_keys.append(read_secret_key(cache.secret_key))
    return BinaryCacheWriter(sink, cache.compression, all_keys)


__all__ = [
    "EXTENSIONS",
    "BinaryCacheWriter",
    "CacheSink",
    "FileSink",
    "open_writer",
    "read_secret_key",
    "spool_nar",
]

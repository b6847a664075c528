"""Writing a Nix binary cache the way Nix 2.8 does.

A cache holds ``nix-cache-info`` (``StoreDir: /nix/store``), one
``nar/<filehash>.nar<.xz|.zst|.bz2|>`` per path, named by the SHA-256 of its
compressed bytes, and ``<hash>.narinfo``. The narinfo is written last and
each object appears whole (a rename on a file system, one PUT on S3), so a
reader never finds a narinfo whose NAR is missing or half-written, whenever
the writer stops.

A NAR is streamed: the trio side hashes it and writes it into a pipe; a
worker thread compresses from the pipe into a spool file, hashing what it
writes, so memory stays flat whatever the NAR's size. Compression uses
both cores: zstd through libzstd's worker threads; xz through ``xz -T2``
with 4 MiB blocks (a 52 MB NAR: 26.7 s with one thread as Nix compresses,
10.6 s so, for 4% more bytes; liblzma's threaded encoder is not reachable
from Python's lzma); bzip2 has no threaded encoder here and runs in the
worker thread, beside the NAR being produced on the other core.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterable, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Protocol, TypeVar, cast

import trio
import zstandard

from ... import nixbase32
from ...errors import IntegrityError, SigningKeyError, StoreError, StoreURLError
from ...nar.narinfo import Narinfo, NixHash
from ...nar.signing import SecretKey, sign_narinfo
from ...pathinfo.model import PathInfo
from ...storepath import STORE_DIR, StorePath
from .url import CacheURL

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
_XZ = ("xz", "-6", "-T2", "--block-size=4MiB", "--stdout", "--quiet")
_COPY_SIZE = 1 << 20
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

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._handle.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


class _Compressor:
    """A worker thread: the NAR from a pipe, compressed into the spool file."""

    def __init__(self, compression: str, source: int, spool: BinaryIO) -> None:
        self._compression = compression
        self._source = source
        self._spool = spool
        self.out = _HashingWriter(spool)
        self._process: subprocess.Popen[bytes] | None = None
        self._aborted = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="compress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with open(self._source, "rb", buffering=0) as source, self._spool:
                self._compress(source)
        except BaseException as exc:
            self._error = exc

    def _compress(self, source: BinaryIO) -> None:
        compression = self._compression
        if compression == "zstd":
            zstandard.ZstdCompressor(level=3, threads=-1).copy_stream(
                source, cast("IO[bytes]", self.out), read_size=_COPY_SIZE
            )
        elif compression == "xz" and shutil.which("xz") is not None:
            self._xz_process(source)
        elif compression in ("xz", "bzip2"):
            encoder = lzma.LZMACompressor(preset=6) if compression == "xz" else bz2.BZ2Compressor(9)
            while data := source.read(_COPY_SIZE):
                self.out.write(encoder.compress(data))
            self.out.write(encoder.flush())
        else:
            while data := source.read(_COPY_SIZE):
                self.out.write(data)

    def _xz_process(self, source: BinaryIO) -> None:
        process = subprocess.Popen(_XZ, stdin=source, stdout=subprocess.PIPE)
        self._process = process
        # Only xz may hold the read end: if it dies, the NAR's writer must see a broken pipe.
        source.close()
        if self._aborted.is_set():  # abort() ran before the process existed
            process.kill()
        assert process.stdout is not None
        with process.stdout:
            while data := process.stdout.read(_COPY_SIZE):
                self.out.write(data)
        if process.wait() != 0 and not self._aborted.is_set():
            raise StoreError(f"xz exited with status {process.returncode}")

    def join(self) -> tuple[bytes, int]:
        """Wait for the end (the pipe's writer closed it); the spool file's SHA-256 and size."""
        self._thread.join()
        if self._error is not None:
            if isinstance(self._error, StoreError):
                raise self._error
            raise StoreError(f"compressing ({self._compression}): {self._error}")
        return self.out.sha256.digest(), self.out.size

    def abort(self) -> None:
        """Stop at once (the pipe's writer must have closed it); the spool is then garbage."""
        self._aborted.set()
        process = self._process
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        self._thread.join()
        if process is not None:
            process.wait()


@dataclasses.dataclass(frozen=True)
class Spooled:
    """A NAR compressed into a spool file, with the digests of both."""

    path: Path
    nar_sha256: bytes
    nar_size: int
    file_sha256: bytes
    file_size: int


async def spool_nar(
    nar: AsyncIterable[bytes], compression: str, spool_dir: Path, progress: Progress
) -> Spooled:
    """Compress the NAR stream into a new file in ``spool_dir`` (removed again on any failure)."""
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".nar", dir=spool_dir)
    spool = Path(name)
    done = False
    try:
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):  # a smaller pipe only costs wake-ups
            import fcntl

            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        compressor = _Compressor(compression, read_end, open(fd, "wb"))
        try:
            nar_sha256 = hashlib.sha256()
            nar_size = 0
            async with trio.lowlevel.FdStream(write_end) as pipe:
                try:
                    async for chunk in nar:
                        nar_sha256.update(chunk)
                        nar_size += len(chunk)
                        await pipe.send_all(chunk)
                        progress(len(chunk))
                except trio.BrokenResourceError:
                    pass  # the compressor stopped reading: join() says why
            file_sha256, file_size = await trio.to_thread.run_sync(
                compressor.join, abandon_on_cancel=True
            )
            done = True
        finally:
            if not done:
                compressor.abort()
    finally:
        if not done:
            spool.unlink(missing_ok=True)
    return Spooled(spool, nar_sha256.digest(), nar_size, file_sha256, file_size)


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

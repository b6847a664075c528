"""Writing a Nix binary cache the way Nix 2.8 does.

A cache holds ``nix-cache-info`` (``StoreDir: /nix/store``), one
``nar/<filehash>.nar<.xz|.zst|.bz2|>`` per path, named by the SHA-256 of its
compressed bytes, and ``<hash>.narinfo``. The narinfo is written last and
each object appears whole (a rename on a file system, one PUT on S3), so a
reader never finds a narinfo whose NAR is missing or half-written, whenever
the writer stops.

NARs are compressed on the way by ``compress.py``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterable, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, TypeVar

from ... import loopless, nixbase32
from ...errors import IntegrityError, StoreError, StoreURLError
from ...nar.narinfo import Narinfo, NixHash
from ...pathinfo.model import PathInfo
from ...storepath import STORE_DIR, StorePath
from .compress import EXTENSIONS, Progress, Spool, Spooled, start_spool
from .url import CacheURL

if TYPE_CHECKING:  # cryptography costs 100 ms to import; only signing needs it
    from ...nar.signing import SecretKey

CACHE_INFO = "nix-cache-info"
_CACHE_INFO_TEXT = f"StoreDir: {STORE_DIR}\n".encode()
_MAX_CACHE_INFO = 1 << 16
# What Nix's S3 store sends as Content-Type for each kind of object.
CONTENT_TYPES = {
    "narinfo": "text/x-nix-narinfo",
    "nar": "application/x-nix-nar",
    CACHE_INFO: "text/x-nix-cache-info",
}
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
        return await loopless.to_thread(self._path(key).is_file)

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
            return await loopless.to_thread(fn)
        except OSError as exc:
            raise StoreError(f"{self.describe(key)}: {exc.strerror or exc}") from exc

    async def prepare(self) -> None:
        await self._io("nar", lambda: self.spool_dir().mkdir(parents=True, exist_ok=True))

    async def aclose(self) -> None:
        pass


# -- the writer -----------------------------------------------------------------------------


def narinfo_of(info: PathInfo, spooled: Spooled, url: str, compression: str) -> Narinfo:
    """The narinfo Nix would write for ``info`` stored as ``spooled`` at ``url``."""
    file_hash = NixHash("sha256", spooled.file_sha256)
    return Narinfo.from_pathinfo(info, url, compression, file_hash, spooled.file_size)


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

    async def start(self, info: PathInfo, nar: AsyncIterable[bytes], progress: Progress) -> Adding:
        """Take ``info``'s NAR (the stream ``nar``) into compression; the :class:`Adding`
        then writes it, and its narinfo."""
        spool = await start_spool(nar, self.compression, self.sink.spool_dir(), progress)
        return Adding(self, info, spool)

    async def publish(self, info: PathInfo, spooled: Spooled) -> Narinfo:
        """Move the spooled NAR into the cache, then write its narinfo.

        The NAR must hash to the PathInfo's NarHash and NarSize, else
        :class:`~tvixmount.errors.IntegrityError` and nothing is written.
        """
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


class Adding:
    """A path whose NAR was taken into compression, which may still run meanwhile."""

    def __init__(self, writer: BinaryCacheWriter, info: PathInfo, spool: Spool) -> None:
        self._writer = writer
        self._info = info
        self._spool = spool

    async def finish(self) -> Narinfo:
        """Wait for the compressed NAR, write it, then the narinfo; the narinfo written."""
        return await self._writer.publish(self._info, await self._spool.result())

    def discard(self) -> None:
        """Stop the compression and remove what it wrote; nothing appears in the cache."""
        self._spool.discard()


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
        from ...nar.signing import read_secret_key

        all_keys.append(read_secret_key(cache.secret_key))
    return BinaryCacheWriter(sink, cache.compression, all_keys)


__all__ = ["Adding", "BinaryCacheWriter", "CacheSink", "FileSink", "open_writer"]

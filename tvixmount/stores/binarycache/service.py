"""A Nix binary cache (``file:///DIR``, ``http://...``, ``https://...``) as a PathInfoService.

``get(digest)`` answers from the local cache (an embedded local store) when
it can, without touching the network. Otherwise it fetches
``<hash>.narinfo``, checks it (strict parse, the StorePath it names, the
signatures when trusted keys are configured), streams the NAR through
decompression and the NAR ingester into the local castore while hashing it,
and records the PathInfo in the local cache only once NarHash and NarSize
(and FileHash/FileSize where given) matched. Anything else is an
:class:`~tvixmount.errors.IntegrityError` or
:class:`~tvixmount.errors.StoreError`, logged once, with nothing recorded.

Blocking work (HTTP, file reads, decompression, hashing) runs in one worker
thread per fetch that hands decompressed chunks to the trio side, so a slow
cache never stalls other requests. Concurrent gets of one path share a
single fetch, which goes on when a caller gives up waiting (a deadline).

URL parameters: ``trusted-public-keys`` (space or comma separated, added to
the configured keys), ``timeout`` (seconds, per network operation),
``retries`` (on connection errors and 5xx), ``bearer-token`` (else
``$TVIXMOUNT_BEARER_TOKEN``; else ``$NETRC``/``~/.netrc``; else user:pass in
the URL).
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import io
import logging
import lzma
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, ParamSpec, Protocol, TypeVar, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import httpx
import trio
import zstandard

from ... import nixbase32
from ...castore.blobservice import BlobService
from ...castore.directoryservice import DirectoryService
from ...castore.nodes import Node
from ...errors import (
    IntegrityError,
    NarinfoError,
    StoreError,
    StoreURLError,
    TvixmountError,
    ValidationError,
)
from ...nar.ingest import ingest_nar
from ...nar.narinfo import Narinfo, NixHash
from ...nar.signing import PublicKey, parse_public_keys, pathinfo_signers, valid_signers
from ...pathinfo.model import NarInfo, PathInfo
from ...pathinfo.service import PathInfoService
from ...storepath import STORE_DIR
from ..local.castore import LocalBlobService, LocalDirectoryService
from ..local.store import open_local

log = logging.getLogger(__name__)

_T = TypeVar("_T", int, float)
_P = ParamSpec("_P")
_R = TypeVar("_R")

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
BEARER_TOKEN_ENV = "TVIXMOUNT_BEARER_TOKEN"
_BACKOFF_BASE = 0.25  # seconds; doubles per retry
_BACKOFF_MAX = 5.0
_MAX_METADATA_SIZE = 1 << 20  # a narinfo or nix-cache-info is a few hundred bytes
_READ_SIZE = 1 << 20
_CHANNEL_DEPTH = 4  # decompressed chunks in flight between the worker thread and ingest
_ABSENT_STATUS = (403, 404, 410)  # S3 answers 403 for a missing key
_KNOWN_PARAMS = ("trusted-public-keys", "timeout", "retries", "bearer-token")


# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheURL:
    """A binary cache URL split into where it is and how to talk to it."""

    base: str  # without query, without trailing slash
    trusted_public_keys: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    bearer_token: str | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return urlsplit(self.base).scheme

    @classmethod
    def parse(cls, url: str) -> CacheURL:
        parts = urlsplit(url)
        if parts.scheme not in ("file", "http", "https"):
            raise StoreURLError(f"{url!r} is not a file://, http:// or https:// binary cache URL")
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise StoreURLError(f"{url!r}: a file cache URL is file:///ABSOLUTE/DIR")
        elif not parts.netloc:
            raise StoreURLError(f"{url!r}: no host")
        params = parse_qs(parts.query, keep_blank_values=True)
        for name in params:
            if name not in _KNOWN_PARAMS:
                log.warning("%s: ignoring unknown URL parameter %r", url, name)
        base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

        def single(name: str) -> str | None:
            values = params.get(name)
            if values is None:
                return None
            if len(values) > 1:
                raise StoreURLError(f"{url!r}: parameter {name!r} given twice")
            return values[0]

        timeout = _number(url, "timeout", single("timeout"), float, DEFAULT_TIMEOUT)
        retries = _number(url, "retries", single("retries"), int, DEFAULT_RETRIES)
        return cls(
            base=base,
            trusted_public_keys=tuple(params.get("trusted-public-keys", ())),
            timeout=timeout,
            retries=retries,
            bearer_token=single("bearer-token") or os.environ.get(BEARER_TOKEN_ENV) or None,
        )


def _number(url: str, name: str, text: str | None, kind: type[_T], default: _T) -> _T:
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise StoreURLError(f"{url!r}: parameter {name}={text!r} is not a number") from None
    if value < 0 or (kind is float and value == 0):
        raise StoreURLError(f"{url!r}: parameter {name}={text!r} is out of range")
    return value


def default_cache_dir(cache: CacheURL) -> Path:
    """``$XDG_CACHE_HOME/tvixmount/<short sha256 of the cache URL>``."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    short = hashlib.sha256(cache.base.encode()).hexdigest()[:16]
    return Path(cache_home) / "tvixmount" / short


# -- transports (blocking; called from worker threads) --------------------------------------


class Transport(Protocol):
    def describe(self, path: str) -> str:
        """The full location of ``path`` (for messages)."""
        ...

    def fetch(self, path: str, limit: int) -> bytes | None:
        """The whole (small) object at ``path``; ``None`` if absent."""
        ...

    def open(self, path: str) -> contextlib.AbstractContextManager[Iterator[bytes] | None]:
        """The object's bytes as a stream of chunks; ``None`` if absent."""
        ...

    def close(self) -> None: ...


class FileTransport:
    """A cache directory on a local (or network) file system."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _resolve(self, path: str) -> Path:
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts or "://" in path:
            raise IntegrityError(f"{self.root}: refusing {path!r}, which points outside the cache")
        return self.root / relative

    def describe(self, path: str) -> str:
        return f"file://{quote(str(self.root / path))}"

    def fetch(self, path: str, limit: int) -> bytes | None:
        with self.open(path) as chunks:
            if chunks is None:
                return None
            return _read_limited(chunks, limit, self.describe(path))

    @contextlib.contextmanager
    def open(self, path: str) -> Iterator[Iterator[bytes] | None]:
        target = self._resolve(path)
        try:
            handle = open(target, "rb")
        except (FileNotFoundError, NotADirectoryError):
            yield None
            return
        except OSError as exc:
            raise StoreError(f"{self.describe(path)}: {exc.strerror or exc}") from exc
        with handle:
            yield self._chunks(handle, path)

    def _chunks(self, handle: io.BufferedReader, path: str) -> Iterator[bytes]:
        while True:
            try:
                data = handle.read(_READ_SIZE)
            except OSError as exc:
                raise StoreError(f"{self.describe(path)}: {exc.strerror or exc}") from exc
            if not data:
                return
            yield data

    def close(self) -> None:
        pass


class HttpTransport:
    """An HTTP(S) cache: one pooled httpx client, bounded retries with backoff."""

    def __init__(self, cache: CacheURL) -> None:
        self._base = cache.base
        self._origin = urlsplit(cache.base)[:2]
        self._timeout = cache.timeout
        self._retries = cache.retries
        self._headers = (
            {"Authorization": f"Bearer {cache.bearer_token}"} if cache.bearer_token else {}
        )
        self._netrc = _netrc_auth() if not cache.bearer_token else None
        self._client = httpx.Client(
            timeout=httpx.Timeout(cache.timeout),
            follow_redirects=True,  # httpx drops credentials when a redirect leaves the origin
            headers={"User-Agent": "tvixmount"},
        )

    def describe(self, path: str) -> str:
        return self._url(path)

    def _url(self, path: str) -> str:
        # Nix allows a narinfo's URL to be absolute.
        if path.startswith(("http://", "https://")):
            return path
        return f"{self._base}/{path}"

    def _send(self, path: str) -> httpx.Response | None:
        url = self._url(path)
        same_origin = urlsplit(url)[:2] == self._origin
        headers = self._headers if same_origin else {}
        auth = self._netrc if same_origin else None
        problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                delay = min(_BACKOFF_BASE * 2 ** (attempt - 1), _BACKOFF_MAX)
                log.debug("%s: %s; retrying in %.2fs", url, problem, delay)
                time.sleep(delay)
            try:
                request = self._client.build_request("GET", url, headers=headers)
                response = self._client.send(request, stream=True, auth=auth)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                problem = f"cannot connect: {exc}"
                continue
            except httpx.TimeoutException as exc:
                raise StoreError(f"{url}: no answer within {self._timeout:g}s ({exc!r})") from exc
            except httpx.HTTPError as exc:
                raise StoreError(f"{url}: {exc}") from exc
            status = response.status_code
            if status == 200:
                return response
            response.close()
            if status in _ABSENT_STATUS:
                return None
            problem = f"HTTP {status} {response.reason_phrase}"
            if status < 500:
                raise StoreError(f"{url}: {problem}")
        raise StoreError(f"{url}: {problem} (gave up after {self._retries + 1} attempts)")

    def fetch(self, path: str, limit: int) -> bytes | None:
        with self.open(path) as chunks:
            if chunks is None:
                return None
            return _read_limited(chunks, limit, self._url(path))

    @contextlib.contextmanager
    def open(self, path: str) -> Iterator[Iterator[bytes] | None]:
        response = self._send(path)
        if response is None:
            yield None
            return
        try:
            yield self._chunks(response, self._url(path))
        finally:
            response.close()

    def _chunks(self, response: httpx.Response, url: str) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(_READ_SIZE)
        except httpx.TimeoutException as exc:
            raise StoreError(f"{url}: stalled for {self._timeout:g}s ({exc!r})") from exc
        except httpx.HTTPError as exc:
            raise StoreError(f"{url}: {exc}") from exc

    def close(self) -> None:
        self._client.close()


def _netrc_auth() -> httpx.Auth | None:
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    if not os.path.isfile(path):
        return None
    try:
        return httpx.NetRCAuth(path)
    except Exception as exc:  # netrc.NetrcParseError, OSError: a broken file is not fatal
        log.warning("ignoring %s: %s", path, exc)
        return None


def _read_limited(chunks: Iterator[bytes], limit: int, where: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise IntegrityError(f"{where}: larger than {limit} bytes; not a narinfo")
        parts.append(chunk)
    return b"".join(parts)


# -- decompression --------------------------------------------------------------------------


class _CountingSource(io.RawIOBase):
    """The compressed file as a readable stream, hashed and counted as it is read."""

    def __init__(self, chunks: Iterator[bytes], narinfo: Narinfo, where: str) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._limit = narinfo.file_size
        self._where = where
        self.hasher = narinfo.file_hash.hasher() if narinfo.file_hash is not None else None
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self.size += len(chunk)
            if self._limit is not None and self.size > self._limit:
                raise IntegrityError(f"{self._where}: longer than its FileSize {self._limit}")
            if self.hasher is not None:
                self.hasher.update(chunk)
            self._pending = memoryview(chunk)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def drain(self) -> None:
        """Read what the decompressor left (to hash and count the whole file)."""
        buffer = bytearray(_READ_SIZE)
        while self.readinto(buffer):
            pass


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _BrotliReader:
    """Brotli has no file reader; this one bounds each output like the others do."""

    def __init__(self, source: io.RawIOBase) -> None:
        import brotli  # type: ignore[import-untyped]  # only needed for br caches

        self._source = source
        self._decompressor = brotli.Decompressor()
        self._error = brotli.error

    def read(self, size: int = -1, /) -> bytes:
        decompressor = self._decompressor
        try:
            while True:
                if decompressor.can_accept_more_data():
                    data = self._source.read(_READ_SIZE)
                    if not data:
                        if not decompressor.is_finished():
                            raise EOFError("brotli stream ends early")
                        return b""
                    if decompressor.is_finished():
                        raise EOFError("data after the end of the brotli stream")
                else:
                    data = b""
                out: bytes = decompressor.process(data, output_buffer_limit=size)
                if out:
                    return out
        except self._error as exc:
            raise EOFError(f"invalid brotli data: {exc}") from exc


def _decompressing_reader(compression: str, source: io.RawIOBase) -> _Readable:
    stream = cast("IO[bytes]", source)  # what the decompressors read from; RawIOBase suffices
    if compression == "none":
        return source
    if compression == "xz":
        return lzma.LZMAFile(stream)
    if compression == "bzip2":
        return bz2.BZ2File(stream)
    if compression == "zstd":
        reader: _Readable = zstandard.ZstdDecompressor().stream_reader(
            stream, read_across_frames=True
        )
        return reader
    if compression == "br":
        try:
            return _BrotliReader(source)
        except ImportError:
            raise StoreError("Compression br needs the 'brotli' package") from None
    raise IntegrityError(f"unsupported Compression {compression!r}")


_DECOMPRESSION_ERRORS = (EOFError, OSError, lzma.LZMAError, zstandard.ZstdError)


@dataclass
class _Digests:
    nar_sha256: bytes
    nar_size: int
    file_digest: bytes | None
    file_size: int


# -- the service ----------------------------------------------------------------------------


class _Flight:
    """One fetch in progress; every get of the same path waits for it."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: PathInfo | None = None
        self.error: StoreError | None = None


class BinaryCachePathInfoService:
    def __init__(
        self,
        cache: CacheURL,
        transport: Transport,
        blobs: BlobService,
        directories: DirectoryService,
        local: PathInfoService,
        trusted_keys: Sequence[PublicKey] = (),
    ) -> None:
        self.cache = cache
        self._transport = transport
        self._blobs = blobs
        self._directories = directories
        self._local = local
        self._keys = tuple(trusted_keys)
        self._flights: dict[bytes, _Flight] = {}
        self._cache_info_checked = False
        self._warned_unsigned = False
        # (root node name, NarInfo) pairs already found signed by a trusted key: all the
        # signature check reads, so each cached path costs one ed25519 verify per service.
        self._trusted: set[tuple[bytes, NarInfo]] = set()

    async def get(self, digest: bytes) -> PathInfo | None:
        info = await self._local.get(digest)
        if info is not None:
            # A path cached by a mount without keys must not slip past a mount with keys:
            # its kept signatures are checked, and if none is trusted it is fetched again.
            if self._is_trusted(info):
                return info
            log.debug("%s: cached copy lacks a trusted signature; refetching", info.store_path)
        flight = self._flights.get(digest)
        if flight is None:
            flight = self._flights[digest] = _Flight()
            # The fetch outlives the request that started it: callers put deadlines on
            # requests (the mount answers EIO after --timeout), and a big NAR that takes
            # longer must still land in the local cache for the next lookup instead of
            # being thrown away and restarted forever. The service has no nursery of its
            # own (it is opened outside trio), so the fetch runs as a system task;
            # _fly never lets an exception escape it.
            trio.lowlevel.spawn_system_task(
                self._fly, digest, flight, name=f"fetch {nixbase32.encode(digest)}"
            )
        await flight.done.wait()
        if flight.error is not None:
            raise type(flight.error)(str(flight.error))
        return flight.result

    def _is_trusted(self, info: PathInfo) -> bool:
        if not self._keys:
            return True
        seen = (info.node.name, info.narinfo)
        if seen in self._trusted:
            return True
        if not pathinfo_signers(info, self._keys):
            return False
        self._trusted.add(seen)
        return True

    async def _fly(self, digest: bytes, flight: _Flight) -> None:
        try:
            flight.result = await self._fetch(digest)
        except StoreError as exc:
            # Debug only: the caller reports the error (the fs layer logs it with EIO, the
            # CLI prints it), and a command must fail with one line on stderr.
            log.debug("%s: lookup of %s failed: %s", self.cache.base, nixbase32.encode(digest), exc)
            flight.error = exc
        except Exception as exc:
            log.exception("%s: lookup of %s failed", self.cache.base, nixbase32.encode(digest))
            flight.error = StoreError(f"{self.cache.base}: internal error: {exc!r}")
        finally:
            del self._flights[digest]
            flight.done.set()

    async def put(self, info: PathInfo) -> PathInfo:
        raise StoreError(f"{self.cache.base} is a binary cache: tvixmount only reads from it")

    async def list(self) -> AsyncIterator[PathInfo]:
        """What the local cache holds (a binary cache cannot be listed)."""
        async for info in self._local.list():
            yield info

    async def aclose(self) -> None:
        self._transport.close()

    async def _in_thread(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), abandon_on_cancel=True)

    async def _check_cache_info(self) -> None:
        if self._cache_info_checked:
            return
        text = await self._in_thread(self._transport.fetch, "nix-cache-info", _MAX_METADATA_SIZE)
        where = self._transport.describe("nix-cache-info")
        if text is None:
            raise StoreError(f"{self.cache.base} is not a Nix binary cache: no {where}")
        for line in text.decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key == "StoreDir" and value.strip() != STORE_DIR:
                raise StoreError(
                    f"{self.cache.base} holds paths for store {value.strip()!r}, not {STORE_DIR}"
                )
        self._cache_info_checked = True

    async def _fetch(self, digest: bytes) -> PathInfo | None:
        hash_text = nixbase32.encode(digest)
        name = f"{hash_text}.narinfo"
        where = self._transport.describe(name)
        await self._check_cache_info()
        raw = await self._in_thread(self._transport.fetch, name, _MAX_METADATA_SIZE)
        if raw is None:
            log.debug("%s: absent", where)
            return None
        try:
            narinfo = Narinfo.parse(raw, source=where)
        except NarinfoError as exc:
            raise IntegrityError(str(exc)) from exc
        if narinfo.store_path.digest != digest:
            raise IntegrityError(
                f"{where}: describes {narinfo.store_path.absolute}, "
                f"not a path with hash {hash_text}"
            )
        self._check_signatures(narinfo, where)
        node = await self._fetch_nar(narinfo)
        try:
            info = narinfo.to_pathinfo(node)
        except ValidationError as exc:
            raise IntegrityError(f"{where}: {exc}") from exc
        await self._local.put(info)
        log.info(
            "fetched %s (NAR %d bytes, %s) from %s",
            narinfo.store_path.absolute,
            narinfo.nar_size,
            narinfo.compression,
            self.cache.base,
        )
        return info

    def _check_signatures(self, narinfo: Narinfo, where: str) -> None:
        if not self._keys:
            if not self._warned_unsigned:
                log.warning(
                    "%s: no trusted public keys given; accepting narinfos without checking "
                    "signatures",
                    self.cache.base,
                )
                self._warned_unsigned = True
            return
        if valid_signers(narinfo, self._keys):
            return
        trusted = ", ".join(key.name for key in self._keys)
        if not narinfo.signatures:
            reason = f"is not signed, and trusted keys ({trusted}) are required"
        else:
            signed_by = ", ".join(sig.name for sig in narinfo.signatures)
            reason = f"has no valid signature by a trusted key ({trusted}); signed by {signed_by}"
        raise IntegrityError(f"{where}: {narinfo.store_path.absolute} {reason}")

    async def _fetch_nar(self, narinfo: Narinfo) -> Node:
        """Stream, decompress, hash and ingest the NAR; check it against the narinfo."""
        where = self._transport.describe(narinfo.url)
        send, receive = trio.open_memory_channel[bytes](_CHANNEL_DEPTH)
        produced: list[_Digests] = []
        producer_error: list[BaseException] = []
        ingest_error: TvixmountError | None = None
        node: Node | None = None

        async def produce() -> None:
            try:
                produced.append(await self._in_thread(self._pump, narinfo, where, send.send))
            except trio.BrokenResourceError:
                pass  # ingest stopped reading; its error is the one to report
            except Exception as exc:
                producer_error.append(exc)
            finally:
                send.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            try:
                node = await ingest_nar(
                    receive, self._blobs, self._directories, str(narinfo.store_path).encode()
                )
                async for _ in receive:
                    pass  # the worker still hashes and counts whatever follows
            except TvixmountError as exc:
                ingest_error = exc
            finally:
                receive.close()

        if producer_error:
            raise producer_error[0]
        if produced:
            self._check_digests(narinfo, produced[0], where)
        if ingest_error is not None:
            raise IntegrityError(f"{where}: not a valid NAR: {ingest_error}") from ingest_error
        assert node is not None
        return node

    def _pump(
        self, narinfo: Narinfo, where: str, send: Callable[[bytes], Awaitable[None]]
    ) -> _Digests:
        """Worker thread: read, decompress and hash the file; hand chunks to the trio side."""
        with self._transport.open(narinfo.url) as chunks:
            if chunks is None:
                raise IntegrityError(f"{where}: missing (the narinfo points to it)")
            source = _CountingSource(chunks, narinfo, where)
            nar_hasher = hashlib.sha256()
            nar_size = 0
            try:
                reader = _decompressing_reader(narinfo.compression, source)
                while data := reader.read(_READ_SIZE):
                    nar_size += len(data)
                    if nar_size > narinfo.nar_size:
                        raise IntegrityError(
                            f"{where}: NAR is longer than its NarSize {narinfo.nar_size}"
                        )
                    nar_hasher.update(data)
                    trio.from_thread.run(send, data)
                source.drain()
            except _DECOMPRESSION_ERRORS as exc:
                raise IntegrityError(
                    f"{where}: cannot decompress ({narinfo.compression}): {exc}"
                ) from exc
        return _Digests(
            nar_sha256=nar_hasher.digest(),
            nar_size=nar_size,
            file_digest=source.hasher.digest() if source.hasher is not None else None,
            file_size=source.size,
        )

    @staticmethod
    def _check_digests(narinfo: Narinfo, got: _Digests, where: str) -> None:
        if narinfo.file_size is not None and got.file_size != narinfo.file_size:
            raise IntegrityError(
                f"{where}: {got.file_size} bytes, but FileSize says {narinfo.file_size}"
            )
        if narinfo.file_hash is not None and got.file_digest != narinfo.file_hash.digest:
            raise IntegrityError(f"{where}: file does not match FileHash {narinfo.file_hash}")
        if got.nar_size != narinfo.nar_size:
            raise IntegrityError(
                f"{where}: NAR is {got.nar_size} bytes, but NarSize says {narinfo.nar_size}"
            )
        if got.nar_sha256 != narinfo.nar_hash:
            raise IntegrityError(
                f"{where}: NAR hashes to {NixHash('sha256', got.nar_sha256)}, "
                f"but NarHash says {narinfo.nar_hash_text}"
            )


# -- opening --------------------------------------------------------------------------------


def open_binary_cache(
    url: str, cache_dir: Path | None, trusted_public_keys: Sequence[str]
) -> tuple[LocalBlobService, LocalDirectoryService, BinaryCachePathInfoService, sqlite3.Connection]:
    """The local cache's castore and the binary-cache PathInfoService over it.

    Opens nothing on the network: a path already cached is served offline.
    """
    cache = CacheURL.parse(url)
    keys = parse_public_keys([*trusted_public_keys, *cache.trusted_public_keys])
    blobs, directories, local, db = open_local(cache_dir or default_cache_dir(cache), create=True)
    transport: Transport
    if cache.scheme == "file":
        transport = FileTransport(Path(unquote(urlsplit(cache.base).path)))
    else:
        transport = HttpTransport(cache)
    service = BinaryCachePathInfoService(cache, transport, blobs, directories, local, keys)
    return blobs, directories, service, db


__all__ = [
    "BinaryCachePathInfoService",
    "CacheURL",
    "FileTransport",
    "HttpTransport",
    "default_cache_dir",
    "open_binary_cache",
]

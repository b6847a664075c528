"""Where a binary cache's files come from: file://, http(s):// (and s3://, see ``s3.py``).

A transport knows keys (``nix-cache-info``, ``<hash>.narinfo``,
``nar/<filehash>.nar.xz``), nothing of narinfos or NARs. The opener picks
one by the URL's scheme through :data:`TRANSPORTS`; a new kind of cache is
one entry there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import quote, urlsplit

import trio

from ...errors import IntegrityError, StoreError, StoreURLError
from .decompress import READ_SIZE, content_decoded
from .threads import run_remote
from .url import BACKOFF_MAX, CacheURL

# httpx (and the rich and click its package imports) is imported where HTTP is used:
# 50 ms of every file:// cache's start-up otherwise.
if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

_BACKOFF_BASE = 0.25  # seconds; doubles per retry
_ABSENT_STATUS = (403, 404, 410)  # S3 answers 403 for a missing key


class Transport(Protocol):
    """A binary cache's files by key. Implementations: one module each, one entry in TRANSPORTS.

    Contract (every method runs on the trio loop; blocking work goes to a
    worker thread on :data:`~.threads.REMOTE_THREADS`, never the default
    limiter):

    - A key is a path relative to the cache root, ``/``-separated, as a
      narinfo's ``URL:`` gives it (an http(s) transport also takes an
      absolute ``http(s)://`` URL there, as Nix does). A key that would
      leave the cache (``..``, absolute, NUL) raises
      :class:`~tvixmount.errors.IntegrityError`.
    - ``open(key)`` is an async context manager giving the object's bytes as
      an async iterator of chunks of at most :data:`~.decompress.READ_SIZE`
      bytes, or ``None`` when the key is absent (an async generator behind
      it is closed with ``contextlib.aclosing`` when the context ends, however
      far the caller read). The bytes are the stored
      object's own: a transport that receives them encoded (HTTP
      ``Content-Encoding``) decodes them with
      :func:`~.decompress.content_decoded`, which never expands more than one
      chunk at a time. Leaving the
      context releases the connection; the caller may stop reading early.
    - ``exists(key)``: whether the key is present, without its bytes.
    - Absent means absent (404/410/403, no such file); anything else that
      goes wrong (unreachable, 5xx after the retries, a stalled read) raises
      :class:`~tvixmount.errors.StoreError` with one line naming the key's
      location (``describe(key)``). Each network operation is bounded by the
      URL's ``timeout``; the deadline over a whole fetch
      (:meth:`~.url.CacheURL.deadline`) is the caller's, a trio cancel scope,
      so a transport must stop promptly when cancelled.
    - ``aclose()`` releases connections; the transport is not used after.
    """

    def describe(self, key: str) -> str:
        """The full location of ``key`` (for messages)."""
        ...

    def open(self, key: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes] | None]:
        """The object's bytes as a stream of chunks; ``None`` if absent."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def aclose(self) -> None: ...


async def fetch(transport: Transport, key: str, limit: int) -> bytes | None:
    """The whole (small) object at ``key``, at most ``limit`` bytes; ``None`` if absent."""
    async with transport.open(key) as chunks:
        if chunks is None:
            return None
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise IntegrityError(f"{transport.describe(key)}: larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


def _check_key(key: str, where: str) -> None:
    if "\0" in key or any(ord(c) < 0x20 for c in key):
        raise IntegrityError(f"{where}: refusing key {key!r}, which holds control characters")


# -- file:// --------------------------------------------------------------------------------


class FileTransport:
    """A cache directory on a local (or network) file system."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _resolve(self, key: str) -> Path:
        _check_key(key, str(self.root))
        relative = PurePosixPath(key)
        if relative.is_absolute() or ".." in relative.parts or "://" in key:
            raise IntegrityError(f"{self.root}: refusing {key!r}, which points outside the cache")
        return self.root / relative

    def describe(self, key: str) -> str:
        return f"file://{quote(str(self.root / key))}"

    def _open_regular(self, key: str) -> int | None:
        # Non-blocking: a FIFO planted in the cache must not hang the fetch in open().
        try:
            fd = os.open(self._resolve(key), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"{self.describe(key)}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise IntegrityError(f"{self.describe(key)}: not a regular file")
        return fd

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[AsyncIterator[bytes] | None]:
        fd = await run_remote(lambda: self._open_regular(key))
        if fd is None:
            yield None
            return
        try:
            async with contextlib.aclosing(self._chunks(fd, key)) as chunks:
                yield chunks
        finally:
            os.close(fd)

    async def _chunks(self, fd: int, key: str) -> AsyncGenerator[bytes, None]:
        while True:
            try:
                data = await run_remote(lambda: os.read(fd, READ_SIZE))
            except OSError as exc:
                raise StoreError(f"{self.describe(key)}: {exc.strerror or exc}") from exc
            if not data:
                return
            yield data

    async def exists(self, key: str) -> bool:
        path = self._resolve(key)
        return await run_remote(path.is_file)

    async def aclose(self) -> None:
        pass


# -- http(s):// -----------------------------------------------------------------------------


def netrc_path(configured: Path | None) -> Path:
    """``$NETRC``, else Nix's ``netrc-file`` setting when given, else ``~/.netrc``."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"])
    if configured is not None:
        return configured
    return Path(os.path.expanduser("~/.netrc"))


def _netrc_auth(path: Path) -> httpx.Auth | None:
    import httpx

    if not path.is_file():
        return None
    try:
        return httpx.NetRCAuth(str(path))
    except Exception as exc:  # netrc.NetrcParseError, OSError: a broken file is not fatal
        log.warning("ignoring %s: %s", path, exc)
        return None


class HttpTransport:
    """An HTTP(S) cache: one pooled async httpx client, bounded retries with backoff."""

    def __init__(self, cache: CacheURL, netrc_file: Path | None = None) -> None:
        import httpx

        self._base = cache.base
        self._origin = urlsplit(cache.base)[:2]
        self._timeout = cache.timeout
        self._retries = cache.retries
        self._headers = (
            {"Authorization": f"Bearer {cache.bearer_token}"} if cache.bearer_token else {}
        )
        self._netrc = _netrc_auth(netrc_path(netrc_file)) if not cache.bearer_token else None
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(cache.timeout),
            follow_redirects=True,  # httpx drops credentials when a redirect leaves the origin
            # Encoded bodies are decoded by our bounded layer, never by httpx (which
            # expands a whole received chunk at once); identity is asked for first.
            headers={"User-Agent": "tvixmount", "Accept-Encoding": "identity"},
        )

    def describe(self, key: str) -> str:
        return self._url(key)

    def _url(self, key: str) -> str:
        # Nix allows a narinfo's URL to be absolute.
        if key.startswith(("http://", "https://")):
            return key
        return f"{self._base}/{key}"

    async def _send(self, method: str, key: str) -> httpx.Response | None:
        import httpx

        url = self._url(key)
        _check_key(key, url)
        same_origin = urlsplit(url)[:2] == self._origin
        headers = self._headers if same_origin else {}
        auth = self._netrc if same_origin else None
        problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                delay = min(_BACKOFF_BASE * 2 ** (attempt - 1), BACKOFF_MAX)
                log.debug("%s: %s; retrying in %.2fs", url, problem, delay)
                await trio.sleep(delay)
            try:
                request = self._client.build_request(method, url, headers=headers)
                response = await self._client.send(request, stream=True, auth=auth)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                problem = f"cannot connect: {exc}"
                continue
            except httpx.TimeoutException as exc:
                raise StoreError(f"{url}: no answer within {self._timeout:g}s ({exc!r})") from exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise StoreError(f"{url}: {exc}") from exc
            status = response.status_code
            if status == 200:
                return response
            await response.aclose()
            if status in _ABSENT_STATUS:
                return None
            problem = f"HTTP {status} {response.reason_phrase}"
            if status < 500:
                raise StoreError(f"{url}: {problem}")
        raise StoreError(f"{url}: {problem} (gave up after {self._retries + 1} attempts)")

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[AsyncIterator[bytes] | None]:
        response = await self._send("GET", key)
        if response is None:
            yield None
            return
        url = self._url(key)
        encoding = response.headers.get("Content-Encoding")
        try:
            async with (
                contextlib.aclosing(self._raw(response, url)) as raw,
                content_decoded(raw, encoding, url) as chunks,
            ):
                yield chunks
        finally:
            await response.aclose()

    async def _raw(self, response: httpx.Response, url: str) -> AsyncGenerator[bytes, None]:
        import httpx

        try:
            # An async generator in fact; typed as an iterator.
            raw = cast("AsyncGenerator[bytes, None]", response.aiter_raw(READ_SIZE))
            async with contextlib.aclosing(raw) as body:
                async for chunk in body:
                    yield chunk
        except httpx.TimeoutException as exc:
            raise StoreError(f"{url}: stalled for {self._timeout:g}s ({exc!r})") from exc
        except httpx.HTTPError as exc:
            raise StoreError(f"{url}: {exc}") from exc

    async def exists(self, key: str) -> bool:
        response = await self._send("HEAD", key)
        if response is None:
            return False
        await response.aclose()
        return True

    async def aclose(self) -> None:
        await self._client.aclose()


# -- choosing one ---------------------------------------------------------------------------


def _open_file(cache: CacheURL, netrc_file: Path | None) -> Transport:
    return FileTransport(Path(cache.path))


def _open_http(cache: CacheURL, netrc_file: Path | None) -> Transport:
    return HttpTransport(cache, netrc_file)


def _open_s3(cache: CacheURL, netrc_file: Path | None) -> Transport:
    try:  # boto3 is imported only for s3:// caches
        from .s3 import S3Transport  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise StoreURLError(f"{cache.base}: s3:// caches need {exc.name or exc}") from None
    transport: Transport = S3Transport(cache)
    return transport


# scheme -> transport factory (the cache URL, Nix's netrc-file setting)
TRANSPORTS: dict[str, Callable[[CacheURL, Path | None], Transport]] = {
    "file": _open_file,
    "http": _open_http,
    "https": _open_http,
    "s3": _open_s3,
}


def open_transport(cache: CacheURL, netrc_file: Path | None = None) -> Transport:
    factory = TRANSPORTS.get(cache.scheme)
    if factory is None:
        raise StoreURLError(f"{cache.base}: no transport for {cache.scheme}:// caches")
    return factory(cache, netrc_file)


__all__ = [
    "TRANSPORTS",
    "FileTransport",
    "HttpTransport",
    "Transport",
    "fetch",
    "netrc_path",
    "open_transport",
]

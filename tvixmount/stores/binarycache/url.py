"""A binary cache URL, parsed once: where the cache is and the parameters Nix takes for it.

``file:///DIR``, ``http(s)://HOST/PATH``, ``s3://BUCKET``, each with an
optional query of Nix's store parameters. Nix's own names are used:
``trusted-public-keys`` (space or comma separated, added to the configured
keys), ``compression`` (when writing: xz, bzip2, zstd, br or none; Nix's
default xz), ``compression-level``, ``secret-key`` (a key file, when
writing), ``priority``, ``want-mass-query``, and for S3 ``region``,
``endpoint``, ``scheme`` (of the endpoint) and ``profile``. tvixmount adds
``timeout`` (seconds per network operation), ``retries`` (on connection
errors and 5xx) and ``bearer-token`` (else ``$TVIXMOUNT_BEARER_TOKEN``).
An unknown parameter is logged and ignored, as Nix warns and ignores it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from ...errors import StoreURLError

log = logging.getLogger(__name__)

_T = TypeVar("_T", int, float)

SCHEMES = ("file", "http", "https", "s3")
COMPRESSIONS = ("none", "xz", "bzip2", "zstd", "br")
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
BACKOFF_MAX = 5.0  # seconds between two tries at most
DEFAULT_COMPRESSION = "xz"  # what Nix writes when a cache URL names none
BEARER_TOKEN_ENV = "TVIXMOUNT_BEARER_TOKEN"
_KNOWN_PARAMS = frozenset(
    {
        "trusted-public-keys",
        "compression",
        "compression-level",
        "secret-key",
        "priority",
        "want-mass-query",
        "timeout",
        "retries",
        "bearer-token",
        "region",
        "endpoint",
        "scheme",
        "profile",
    }
)


@dataclass(frozen=True)
class CacheURL:
    """A binary cache URL split into where it is and how to talk to it."""

    base: str  # without query, without trailing slash
    trusted_public_keys: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    bearer_token: str | None = field(default=None, repr=False)
    compression: str = DEFAULT_COMPRESSION
    compression_level: int | None = None
    secret_key: Path | None = None
    priority: int | None = None
    want_mass_query: bool | None = None
    # s3:// only
    region: str | None = None
    endpoint: str | None = None
    endpoint_scheme: str = "https"
    profile: str | None = None

    def deadline(self, size: int = 0) -> float:
        """Seconds one whole fetch of ``size`` bytes may take, retries included.

        ``timeout`` bounds each network operation, but a server that trickles
        a byte now and then never trips it: the whole fetch gets ``timeout``
        per try and one more (so a single stalled operation reports itself
        first), plus ``timeout`` per MiB (at least 1 MiB per ``timeout``
        seconds on average, 35 KB/s by default).
        """
        tries = self.retries + 1
        return self.timeout * (tries + 1 + size / (1 << 20)) + BACKOFF_MAX * self.retries

    @property
    def scheme(self) -> str:
        return urlsplit(self.base).scheme

    @property
    def host(self) -> str:
        """The host (http) or bucket (s3); empty for file://."""
        return urlsplit(self.base).netloc

    @property
    def path(self) -> str:
        """The URL's path, percent-decoded (a file:// cache's directory)."""
        return unquote(urlsplit(self.base).path)

    @classmethod
    def parse(cls, url: str) -> CacheURL:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise StoreURLError(
                f"{url!r} is not a file://, http://, https:// or s3:// binary cache URL"
            )
        if "\0" in url:
            raise StoreURLError(f"{url!r}: a NUL byte in the URL")
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise StoreURLError(f"{url!r}: a file cache URL is file:///ABSOLUTE/DIR")
        elif not parts.netloc:
            raise StoreURLError(f"{url!r}: no {'bucket' if parts.scheme == 's3' else 'host'}")
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

        compression = single("compression") or DEFAULT_COMPRESSION
        if compression not in COMPRESSIONS:
            raise StoreURLError(
                f"{url!r}: compression={compression!r} is not one of {', '.join(COMPRESSIONS)}"
            )
        endpoint_scheme = single("scheme") or "https"
        if endpoint_scheme not in ("http", "https"):
            raise StoreURLError(f"{url!r}: scheme={endpoint_scheme!r} is not http or https")
        secret_key = single("secret-key")
        return cls(
            base=base,
            trusted_public_keys=tuple(params.get("trusted-public-keys", ())),
            timeout=_number(url, "timeout", single("timeout"), float, DEFAULT_TIMEOUT),
            retries=_number(url, "retries", single("retries"), int, DEFAULT_RETRIES),
            bearer_token=single("bearer-token") or os.environ.get(BEARER_TOKEN_ENV) or None,
            compression=compression,
            compression_level=_optional_int(url, "compression-level", single("compression-level")),
            secret_key=Path(secret_key) if secret_key else None,
            priority=_optional_int(url, "priority", single("priority")),
            want_mass_query=_optional_bool(url, "want-mass-query", single("want-mass-query")),
            region=single("region") or None,
            endpoint=single("endpoint") or None,
            endpoint_scheme=endpoint_scheme,
            profile=single("profile") or None,
        )


def _number(url: str, name: str, text: str | None, kind: type[_T], default: _T) -> _T:
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise StoreURLError(f"{url!r}: parameter {name}={text!r} is not a number") from None
    if value < 0 or (kind is float and value == 0) or value != value:  # NaN
        raise StoreURLError(f"{url!r}: parameter {name}={text!r} is out of range")
    return value


def _optional_int(url: str, name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise StoreURLError(f"{url!r}: parameter {name}={text!r} is not a number") from None


def _optional_bool(url: str, name: str, text: str | None) -> bool | None:
    if text is None:
        return None
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise StoreURLError(f"{url!r}: parameter {name}={text!r} is not true or false")


def default_cache_dir(cache: CacheURL) -> Path:
    """``$XDG_CACHE_HOME/tvixmount/<short sha256 of the cache URL>``."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    short = hashlib.sha256(cache.base.encode()).hexdigest()[:16]
    return Path(cache_home) / "tvixmount" / short


__all__ = ["BEARER_TOKEN_ENV", "CacheURL", "default_cache_dir"]

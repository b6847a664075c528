"""Store URLs -> the three services (blobs, directories, path infos).

Grammar (DESIGN.md): a directory path (the embedded local store),
``memory://``, ``grpc+http://HOST:PORT``, ``grpc+unix:///PATH``,
``file:///DIR``, ``http://...``, ``https://...``, ``s3://BUCKET`` (Nix binary caches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import StoreURLError

# Each opener imports its backend itself: a command pays only for the store kind
# it opens (the embedded store alone pulls in trio and protobuf; grpc and httpx
# cost more), and checking a URL or building the CLI parser imports none.
if TYPE_CHECKING:
    from ..castore.blobservice import BlobService
    from ..castore.directoryservice import DirectoryService
    from ..pathinfo.service import PathInfoService


@dataclass
class StoreOptions:
    """Options that only some store kinds use."""

    create: bool = False  # create an embedded store that does not exist yet
    cache_dir: Path | None = None  # local castore cache of a binary cache
    trusted_public_keys: tuple[str, ...] = ()
    require_sigs: bool = True  # Nix's require-sigs for binary caches; False: --no-require-sigs


@dataclass
class Store:
    url: str
    blobs: BlobService
    directories: DirectoryService
    pathinfos: PathInfoService
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    # True when every service answers inline on the calling thread (local disk or
    # memory): nothing can cancel such a call, so callers skip per-call deadlines.
    inline: bool = False
    _warmers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def warm(self) -> None:
        """Start reading the store's indexes into memory (best effort; returns at once)."""
        for warm in self._warmers:
            warm()

    async def aclose(self) -> None:
        for service in (self.pathinfos, self.directories, self.blobs):
            await service.aclose()
        for close in self._closers:
            close()


def _no_keys(url: str, options: StoreOptions) -> None:
    """A store whose content is this machine's own carries no signatures to check."""
    if options.trusted_public_keys:
        raise StoreURLError(
            f"--trusted-public-key does not apply to {url!r}: only binary caches and gRPC "
            "stores have signatures to check"
        )


def _open_memory(url: str, options: StoreOptions) -> Store:
    _no_keys(url, options)
    from .memory.castore import MemoryBlobService, MemoryDirectoryService
    from .memory.pathinfo import MemoryPathInfoService

    return Store(
        url, MemoryBlobService(), MemoryDirectoryService(), MemoryPathInfoService(), inline=True
    )


def _open_local_path(url: str, options: StoreOptions) -> Store:
    from .local.store import open_local, warm_index

    _no_keys(url, options)
    root = Path(url).expanduser()
    blobs, directories, pathinfos, db = open_local(root, options.create)
    return Store(
        url,
        blobs,
        directories,
        pathinfos,
        [db.close],
        inline=True,
        _warmers=[lambda: warm_index(root)],
    )


def _open_grpc(url: str, options: StoreOptions) -> Store:
    # Imported here: grpc is heavy, and mount must fork before any channel exists.
    from .grpc.store import open_grpc

    return open_grpc(url, options)


def _open_binary_cache(url: str, options: StoreOptions) -> Store:
    from .binarycache.service import open_binary_cache  # httpx: only load when used

    return open_binary_cache(url, options)


_Opener = Callable[[str, StoreOptions], Store]

# scheme -> opener; other store kinds register here.
OPENERS: dict[str, _Opener] = {"memory": _open_memory}
OPENERS["grpc+http"] = OPENERS["grpc+unix"] = _open_grpc
OPENERS["file"] = OPENERS["http"] = OPENERS["https"] = OPENERS["s3"] = _open_binary_cache


def scheme_of(url: str) -> str:
    """The URL's scheme, or ``""`` for a plain directory path."""
    if "://" not in url:
        return ""
    return urlsplit(url).scheme


def check_store_url(url: str) -> None:
    """Validate the URL's form without opening anything (used before forking)."""
    scheme = scheme_of(url)
    if scheme and scheme not in OPENERS:
        known = ", ".join(f"{s}://" for s in sorted(OPENERS))
        raise StoreURLError(
            f"unknown store URL scheme {scheme!r} in {url!r}; known: a directory path, {known}"
        )


def default_store_url() -> str:
    from .local.store import default_store_dir

    return str(default_store_dir())


def open_store(url: str | None = None, options: StoreOptions | None = None) -> Store:
    """Open the store a URL names (``None``: the embedded default store)."""
    url = url or default_store_url()
    options = options or StoreOptions()
    check_store_url(url)
    scheme = scheme_of(url)
    if not scheme:
        return _open_local_path(url, options)
    return OPENERS[scheme](url, options)


__all__ = ["OPENERS", "Store", "StoreOptions", "check_store_url", "open_store"]

"""A :class:`~tvixmount.stores.Store` on a tvix-store compatible gRPC server."""

from __future__ import annotations

from ...nar.signing import parse_public_keys
from .. import Store, StoreOptions
from .blobs import GrpcBlobService
from .cache import LocalCache
from .directories import GrpcDirectoryService
from .hints import BlobHints
from .pathinfo import GrpcPathInfoService
from .transport import GrpcTransport


def open_grpc(url: str, options: StoreOptions) -> Store:
    """Connect to ``url``; PathInfos must be signed by ``options.trusted_public_keys`` if given.

    ``options.cache_dir`` keeps verified Blobs and Directories on disk (:mod:`.cache`).
    """
    keys = parse_public_keys(options.trusted_public_keys)
    transport = GrpcTransport(url)
    transport.connect()
    # The three clients share what the Directories and PathInfos received say
    # about blob sizes: it bounds every blob stream.
    hints = BlobHints()
    closers = [transport.close]
    cache = None
    if options.cache_dir is not None:
        try:
            cache = LocalCache(options.cache_dir)
        except BaseException:
            transport.close()
            raise
        closers.append(cache.close)
    blobs = GrpcBlobService(transport, hints, cache_dir=cache)
    pathinfos = GrpcPathInfoService(transport, keys, hints)
    pathinfos.warm_up()
    return Store(
        url,
        blobs,
        GrpcDirectoryService(transport, hints, cache, entered=blobs.read_directory_ahead),
        pathinfos,
        closers,
    )


__all__ = ["open_grpc"]

"""A Nix binary cache as a PathInfoService: fetch on first lookup, verify, keep locally.

``get(digest)`` answers from the local cache (an embedded local store) when
it can, without touching the network. Otherwise it fetches
``<hash>.narinfo``, checks it (strict parse, the StorePath it names, the
signatures when trusted keys are configured), streams the NAR through the
transport (``transport.py``), decompression (``decompress.py``) and the
NAR ingester into the local castore while hashing it, and records the
PathInfo in the local cache only once NarHash and NarSize (and
FileHash/FileSize where given) matched. Anything else is an
:class:`~tvixmount.errors.IntegrityError` or
:class:`~tvixmount.errors.StoreError`, logged once, with nothing recorded.

Network I/O is async on the trio loop; decompression and file reads run in
worker threads on the remote-fetch limiter (``threads.py``), so a slow
cache never stalls other requests. Concurrent gets of one path share a
single fetch, which goes on when a caller gives up waiting (a deadline).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ... import nixbase32
from ...castore.blobservice import BlobService
from ...castore.directoryservice import DirectoryService
from ...castore.nodes import Node
from ...errors import IntegrityError, NarinfoError, StoreError, TvixmountError, ValidationError
from ...nar.ingest import ingest_nar
from ...nar.narinfo import Narinfo
from ...nar.signing import PublicKey, parse_public_keys, pathinfo_signers, valid_signers
from ...pathinfo.model import NarInfo, NixHash, PathInfo
from ...pathinfo.service import PathInfoService
from ...storepath import STORE_DIR
from ..local.store import open_local
from .decompress import decompressed
from .transport import Transport, fetch, open_transport
from .url import CacheURL, default_cache_dir

if TYPE_CHECKING:
    import sqlite3

    from ..local.castore import LocalBlobService, LocalDirectoryService

log = logging.getLogger(__name__)

_MAX_METADATA_SIZE = 1 << 20  # a narinfo or nix-cache-info is a few hundred bytes


class _Measured:
    """A chunk stream counted and hashed as it passes; longer than ``limit`` is an error."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        limit: int | None,
        hasher: hashlib._Hash | None,
        too_long: str,
    ) -> None:
        self._chunks = chunks
        self._limit = limit
        self._too_long = too_long
        self.hasher = hasher
        self.size = 0

    def __aiter__(self) -> _Measured:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._chunks.__anext__()
        self.size += len(chunk)
        if self._limit is not None and self.size > self._limit:
            raise IntegrityError(self._too_long)
        if self.hasher is not None:
            self.hasher.update(chunk)
        return chunk

    async def drain(self) -> None:
        """Read what is left (to hash and count the whole stream)."""
        async for _ in self:
            pass


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
        await self._transport.aclose()

    async def _check_cache_info(self) -> None:
        if self._cache_info_checked:
            return
        text = await fetch(self._transport, "nix-cache-info", _MAX_METADATA_SIZE)
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
        raw = await fetch(self._transport, name, _MAX_METADATA_SIZE)
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
        async with self._transport.open(narinfo.url) as raw:
            if raw is None:
                raise IntegrityError(f"{where}: missing (the narinfo points to it)")
            file = _Measured(
                raw,
                narinfo.file_size,
                narinfo.file_hash.hasher() if narinfo.file_hash is not None else None,
                f"{where}: longer than its FileSize {narinfo.file_size}",
            )
            async with decompressed(file, narinfo.compression, where) as decoded:
                nar = _Measured(
                    decoded,
                    narinfo.nar_size,
                    hashlib.sha256(),
                    f"{where}: NAR is longer than its NarSize {narinfo.nar_size}",
                )
                ingest_error: TvixmountError | None = None
                node: Node | None = None
                try:
                    node = await ingest_nar(
                        nar, self._blobs, self._directories, str(narinfo.store_path).encode()
                    )
                except (IntegrityError, StoreError):
                    raise  # the stream itself failed: that is the error to report
                except TvixmountError as exc:
                    ingest_error = exc
                # What follows a bad NAR still counts: a size or hash mismatch says more.
                await nar.drain()
            await file.drain()
        self._check_digests(narinfo, file, nar, where)
        if ingest_error is not None:
            raise IntegrityError(f"{where}: not a valid NAR: {ingest_error}") from ingest_error
        assert node is not None
        return node

    @staticmethod
    def _check_digests(narinfo: Narinfo, file: _Measured, nar: _Measured, where: str) -> None:
        if narinfo.file_size is not None and file.size != narinfo.file_size:
            raise IntegrityError(
                f"{where}: {file.size} bytes, but FileSize says {narinfo.file_size}"
            )
        if narinfo.file_hash is not None:
            assert file.hasher is not None
            if file.hasher.digest() != narinfo.file_hash.digest:
                raise IntegrityError(f"{where}: file does not match FileHash {narinfo.file_hash}")
        if nar.size != narinfo.nar_size:
            raise IntegrityError(
                f"{where}: NAR is {nar.size} bytes, but NarSize says {narinfo.nar_size}"
            )
        assert nar.hasher is not None
        got = nar.hasher.digest()
        if got != narinfo.nar_hash:
            raise IntegrityError(
                f"{where}: NAR hashes to {NixHash('sha256', got)}, "
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
    transport = open_transport(cache)
    service = BinaryCachePathInfoService(cache, transport, blobs, directories, local, keys)
    return blobs, directories, service, db


__all__ = ["BinaryCachePathInfoService", "open_binary_cache"]

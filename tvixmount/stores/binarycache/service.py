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

Network I/O is async on the trio loop; decompression, hashing and file
reads run in worker threads on limiters of their own (``threads.py``), so
a slow cache never stalls other requests. Concurrent gets of one path share a
single fetch, which goes on when a caller gives up waiting (a deadline).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import trio

from ... import nixbase32
from ...castore.blobservice import BlobService
from ...castore.directoryservice import DirectoryService
from ...castore.nodes import Node
from ...errors import IntegrityError, NarinfoError, StoreError, TvixmountError, ValidationError
from ...nar.ingest import ingest_nar
from ...nar.narinfo import Narinfo
from ...nar.signing import parse_public_keys
from ...nixconf import read_nix_config
from ...pathinfo.model import NixHash, PathInfo
from ...pathinfo.service import PathInfoService
from ...storepath import STORE_DIR
from .. import Store, StoreOptions
from ..local.store import open_local
from .decompress import decompressed
from .threads import NAR_DECODE_THREADS, REMOTE_THREADS
from .transport import Transport, fetch, open_transport
from .trust import TrustPolicy, ca_mismatch
from .url import CacheURL, default_cache_dir

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_MAX_METADATA_SIZE = 1 << 20  # a narinfo or nix-cache-info is a few hundred bytes
# Chunks from this size on are hashed in a worker thread; below it the hop costs more.
_THREADED_HASH_MIN = 64 << 10


async def within(seconds: float, where: str, work: Awaitable[_T]) -> _T:
    """``await work``, or a :class:`StoreError` once ``seconds`` have passed."""
    with trio.move_on_after(seconds):
        return await work
    raise StoreError(f"{where}: not received in full within {seconds:g}s")


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
            if len(chunk) >= _THREADED_HASH_MIN:
                # SHA-256 releases the GIL: in a worker thread it runs on the other core,
                # alongside decompression and ingest, instead of stalling the trio loop
                # (and with it every other fetch and FUSE request).
                await trio.to_thread.run_sync(self.hasher.update, chunk, limiter=REMOTE_THREADS)
            else:
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
        policy: TrustPolicy,
    ) -> None:
        self.cache = cache
        self._transport = transport
        self._blobs = blobs
        self._directories = directories
        self._local = local
        self._policy = policy
        self._flights: dict[bytes, _Flight] = {}

    async def get(self, digest: bytes) -> PathInfo | None:
        info = await self._local.get(digest)
        if info is not None:
            # A path cached by a mount that trusted other keys (or none) must not slip past
            # this one: its kept signatures (or CA) are checked; if untrusted, it is refetched.
            if await self._policy.trusts(info, self._blobs):
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

    async def _fetch(self, digest: bytes) -> PathInfo | None:
        hash_text = nixbase32.encode(digest)
        name = f"{hash_text}.narinfo"
        where = self._transport.describe(name)
        raw = await within(
            self.cache.deadline(), where, fetch(self._transport, name, _MAX_METADATA_SIZE)
        )
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
        signed = self._policy.signed(narinfo)
        if not signed and narinfo.ca is None:
            self._refuse(narinfo, where, "")
            return None
        size = narinfo.file_size if narinfo.file_size is not None else narinfo.nar_size
        nar_where = self._transport.describe(narinfo.url)
        node = await within(self.cache.deadline(size), nar_where, self._fetch_nar(narinfo))
        try:
            info = narinfo.to_pathinfo(node)
        except ValidationError as exc:
            raise IntegrityError(f"{where}: {exc}") from exc
        if not signed and (mismatch := await ca_mismatch(info, self._blobs)) is not None:
            self._refuse(narinfo, where, f", and its {mismatch}")
            return None
        await self._local.put(info)
        # debug: a listing or a build fetching a closure would print a line per path.
        log.debug(
            "fetched %s (NAR %d bytes, %s) from %s",
            narinfo.store_path.absolute,
            narinfo.nar_size,
            narinfo.compression,
            self.cache.base,
        )
        return info

    def _refuse(self, narinfo: Narinfo, where: str, why_not_ca: str) -> None:
        # A warning, not an error: as in Nix, an untrusted path is absent (ENOENT), and
        # the log says why.
        log.warning(
            "%s: %s %s%s; not serving it (require-sigs; --no-require-sigs turns this off)",
            where,
            narinfo.store_path.absolute,
            self._policy.unsigned_reason(narinfo),
            why_not_ca,
        )

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
            decoding = decompressed(file, narinfo.compression, where, NAR_DECODE_THREADS)
            async with decoding as decoded:
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


async def check_cache_info(transport: Transport, cache: CacheURL) -> None:
    """The cache answers, is a Nix binary cache, and holds paths for /nix/store."""
    where = transport.describe("nix-cache-info")
    text = await within(
        cache.deadline(), where, fetch(transport, "nix-cache-info", _MAX_METADATA_SIZE)
    )
    if text is None:
        raise StoreError(f"{cache.base} is not a Nix binary cache: no {where}")
    for line in text.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key == "StoreDir" and value.strip() != STORE_DIR:
            raise StoreError(
                f"{cache.base} holds paths for store {value.strip()!r}, not {STORE_DIR}"
            )


def _check_now(cache: CacheURL, netrc_file: Path | None) -> None:
    """Run :func:`check_cache_info` from synchronous code, inside trio or not.

    Stores are opened outside trio (``mount`` opens before its loop starts)
    and inside it (``ls``), so the check runs its own trio loop in a helper
    thread, with a transport of its own.
    """

    async def check() -> None:
        transport = open_transport(cache, netrc_file)
        try:
            await check_cache_info(transport, cache)
        finally:
            await transport.aclose()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nix-cache-info") as pool:
        pool.submit(trio.run, check).result()


def _trust_policy(cache: CacheURL, options: StoreOptions) -> tuple[TrustPolicy, Path | None]:
    """Keys and require-sigs from the options, or from Nix's configuration (and its netrc)."""
    if options.trusted_public_keys:
        texts, require, netrc_file = options.trusted_public_keys, options.require_sigs, None
        off_by = "--no-require-sigs"
    else:
        config = read_nix_config()
        texts, netrc_file = config.trusted_public_keys, config.netrc_file
        require = options.require_sigs and config.require_sigs
        off_by = (
            "--no-require-sigs"
            if not options.require_sigs
            else f"require-sigs = false in {config.require_sigs_source}"
        )
    keys = parse_public_keys([*texts, *cache.trusted_public_keys])
    return TrustPolicy(keys, require, off_by), netrc_file


def open_binary_cache(url: str, options: StoreOptions) -> Store:
    """The binary cache at ``url`` over its local castore cache.

    The cache is asked for its ``nix-cache-info`` first: unreachable, not a
    cache, or one for another store directory is a
    :class:`~tvixmount.errors.StoreError` before anything is served.
    """
    cache = CacheURL.parse(url)
    policy, netrc_file = _trust_policy(cache, options)
    _check_now(cache, netrc_file)
    if not policy.require_sigs:
        log.warning(
            "%s: signatures are not required (%s): serving paths whose signatures are not checked",
            cache.base,
            policy.off_by,
        )
    blobs, directories, local, db = open_local(
        options.cache_dir or default_cache_dir(cache), create=True
    )
    transport = open_transport(cache, netrc_file)
    service = BinaryCachePathInfoService(cache, transport, blobs, directories, local, policy)
    return Store(url, blobs, directories, service, [db.close])


__all__ = ["BinaryCachePathInfoService", "check_cache_info", "open_binary_cache"]

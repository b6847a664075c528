"""BlobService client for ``tvix.castore.v1.BlobService`` over gRPC.

Readers hand out only verified bytes, and only bytes of a blob verified
whole: a server could send a chunk list whose chunks each match their own
digests yet do not make up the blob asked for. So the first open of a
chunked blob fetches every chunk (a few at a time), checks each against its
chunk digest and their concatenation against the blob digest; only then is
the list trusted, and later reads fetch just the chunks they cover (each
checked again against its digest). An unchunked blob is fetched in one Read
and checked against its digest. Verified blobs, chunks and chunk lists stay
in bounded caches, so a re-open neither fetches nor verifies again.

Every stream is bounded by the size the blob must have: the FileNode that
named it (:mod:`.hints`), or the chunk list's total, or
``MAX_UNHINTED_BYTES``; a server sending more is cut off at once and the
call cancelled.

Opening a small file also fetches, in the background, the next small files
of its Directory: a walk or a build reads them next. A server offering
tvixmount's ReadMany (``tvixmount serve``) sends that window, the opened file
first, in one call, each blob checked against its digest and size as it
arrives; a Read per blob costs most of a millisecond of CPU on each side,
which a walk of thousands of small files would pay per file. Other servers
(UNIMPLEMENTED) get a few Reads at a time.
"""

from __future__ import annotations

import bisect
import logging
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import blake3
import trio

from ..._proto import rpc_blobstore_pb2 as pb
from ..._proto import rpc_blobstore_pb2_grpc as pb_grpc
from ..._proto import tvixmount_blobs_pb2 as batch_pb
from ..._proto import tvixmount_blobs_pb2_grpc as batch_grpc
from ...castore.blobservice import BlobReader, BlobWriter
from ...castore.digest import B3Digest
from ...castore.directory import Directory
from ...castore.nodes import FileNode
from ...errors import (
    DigestError,
    IntegrityError,
    NotFoundError,
    StoreError,
    TvixmountError,
    ValidationError,
)
from ...lru import ByteLRU
from ..memory.castore import MemoryBlobReader
from .cache import LocalCache
from .hints import BlobHints
from .status import Unimplemented
from .transport import REMOTE_THREADS, GrpcTransport, Ticket

log = logging.getLogger(__name__)

PUT_CHUNK_SIZE = 1 << 20  # bytes per BlobChunk message we send
_SPOOL_IN_MEMORY = 16 << 20  # a blob being written moves to a temp file past this
DEFAULT_CACHE_BYTES = 256 << 20
# An unchunked blob whose size no FileNode told is fetched whole into memory,
# so it may be at most this big.
MAX_UNHINTED_BYTES = 256 << 20
_CHUNK_FETCHES = 4  # chunks of one blob fetched at once while verifying it
_VERIFIED_LISTS = 4096  # chunk lists remembered once verified
# Blobs a FileNode says are this small are read whole without a Stat first:
# the first open of a chunked blob fetches every chunk anyway (to verify the
# list), and the server must hash the whole blob to offer its chunks.
DIRECT_READ_MAX = 16 << 20
PREFETCH_MAX_BLOB = 128 << 10  # files up to this size are read ahead (without ReadMany)
READ_AHEAD_FILES = 16  # files after the one opened that are read ahead
_PREFETCH_FETCHES = 8  # of them at once (a server without ReadMany)
# With ReadMany: the window of files after an opened one kept fetched, and the
# bytes one call may ask for. A window is topped up once its first half is
# read, so a walk costs one call per half window, not one per file.
BATCH_FILES = 128
BATCH_MAX_BLOB = 1 << 20  # files up to this size are fetched in windows
BATCH_BYTES = 8 << 20
BIG_AHEAD_BYTES = 32 << 20  # of the bigger files of a window, fetched beside it
SUBDIRECTORY_FILES = 32  # of each Directory below one a mount looks into
_DELIVER_BYTES = 256 << 10  # verified bytes of a ReadMany handed over at a time


@dataclass
class TransferStats:
    """What the client fetched: lets tests and benchmarks see re-fetching."""

    read_calls: int = 0
    stat_calls: int = 0
    bytes_received: int = 0


def _fetch_verified(
    stub: Any, digest: B3Digest, size: int | None, limit: int, ticket: Ticket
) -> bytes:
    """One Read call (in a worker thread): the blob's bytes, verified against ``digest``.

    ``size`` is what the blob must measure if known; no more than ``limit``
    bytes are ever read.
    """
    hasher = blake3.blake3()
    parts: list[bytes] = []
    received = 0
    call = ticket.track(stub.Read(pb.ReadBlobRequest(digest=bytes(digest)), timeout=ticket.timeout))
    for message in call:
        data = message.data
        received += len(data)
        if received > limit:
            call.cancel()
            raise IntegrityError(
                f"blob {digest}: the server sent more than the {limit} bytes it can have"
            )
        hasher.update(data)
        parts.append(data)
    actual = B3Digest(hasher.digest())
    if actual != digest:
        raise IntegrityError(
            f"blob {digest}: the server sent {received} bytes that hash to {actual}, refusing them"
        )
    if size is not None and received != size:
        raise IntegrityError(f"blob {digest}: it has {received} bytes, not the {size} expected")
    return b"".join(parts)


def _fetch_many(
    stub: Any,
    wanted: list[tuple[B3Digest, int]],
    deliver: Callable[[list[tuple[B3Digest, bytes]]], None],
    ticket: Ticket,
) -> None:
    """One ReadMany call (in a worker thread): each blob verified against its digest and size, then
    handed to ``deliver`` on the loop (the first at once: an open waits for it).

    A blob the server lacks is skipped (its open reads it alone, and reports it);
    anything else amiss ends the call.
    """
    request = batch_pb.ReadManyRequest(digests=[bytes(digest) for digest, _ in wanted])
    call = ticket.track(stub.ReadMany(request, timeout=ticket.timeout))
    parts = (part for message in call for part in message.parts)
    ready: list[tuple[B3Digest, bytes]] = []
    pending = 0
    try:
        for i, (digest, size) in enumerate(wanted):
            hasher = blake3.blake3()
            data: list[bytes] = []
            received = 0
            while True:
                part = next(parts, None)
                if part is None:
                    raise StoreError(
                        f"read blobs: the server ended its answer after {i} of {len(wanted)} blobs"
                    )
                if part.missing:
                    break
                chunk = part.data  # (each access copies the bytes out of the message)
                received += len(chunk)
                if received > size:
                    raise IntegrityError(
                        f"blob {digest}: the server sent more than the {size} bytes it has"
                    )
                hasher.update(chunk)
                data.append(chunk)
                if part.end:
                    break
            if part.missing:
                continue
            actual = B3Digest(hasher.digest())
            if actual != digest or received != size:
                raise IntegrityError(
                    f"blob {digest}: the server sent {received} bytes that hash to "
                    f"{actual}, refusing them"
                )
            ready.append((digest, b"".join(data)))
            pending += received
            if i == 0 or pending >= _DELIVER_BYTES:
                trio.from_thread.run_sync(deliver, ready)
                ready, pending = [], 0
        if next(parts, None) is not None:
            raise IntegrityError(f"read blobs: the server sent more than the {len(wanted)} asked")
    except BaseException:
        call.cancel()
        raise
    if ready:
        trio.from_thread.run_sync(deliver, ready)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A store error among concurrent fetches, as callers expect one (else the group)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(exc)
        if isinstance(exc, TvixmountError):
            return exc
    return group


class GrpcChunkedBlobReader:
    """A chunked blob whose chunk list was verified: reads fetch only the chunks they cover."""

    def __init__(
        self, service: GrpcBlobService, digest: B3Digest, chunks: list[tuple[B3Digest, int]]
    ) -> None:
        self._service = service
        self._digest = digest
        self._chunks = chunks
        self._starts: list[int] = []
        offset = 0
        for _, size in chunks:
            self._starts.append(offset)
            offset += size
        self._size = offset

    @property
    def size(self) -> int:
        return self._size

    async def pread(self, offset: int, length: int) -> bytes | memoryview:
        end = min(offset + length, self._size)
        if offset >= end:
            return b""
        index = bisect.bisect_right(self._starts, offset) - 1
        parts: list[memoryview] = []
        while index < len(self._chunks) and self._starts[index] < end:
            chunk_digest, chunk_size = self._chunks[index]
            data = memoryview(await self._service.chunk(self._digest, chunk_digest, chunk_size))
            start = self._starts[index]
            parts.append(data[max(offset - start, 0) : min(end - start, chunk_size)])
            index += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        pass


class GrpcBlobWriter:
    """Spools and hashes locally, then uploads in one Put (replayable on retry)."""

    def __init__(self, service: GrpcBlobService) -> None:
        self._service = service
        self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        self._hasher = blake3.blake3()

    async def write(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self._spool.write(data)

    async def finish(self) -> B3Digest:
        digest = B3Digest(self._hasher.digest())
        try:
            if not await self._service.has(digest):
                await self._service.upload(digest, self._spool)
        finally:
            self._spool.close()
        return digest

    async def abort(self) -> None:
        self._spool.close()


class GrpcBlobService:
    def __init__(
        self,
        transport: GrpcTransport,
        hints: BlobHints | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        cache_dir: LocalCache | None = None,
    ) -> None:
        self._transport = transport
        self._cache_dir = cache_dir
        self._stub = pb_grpc.BlobServiceStub(transport.channel)
        self._batch_stub = batch_grpc.BatchBlobServiceStub(transport.channel)
        self._batches = True  # until the server says it has no ReadMany
        self.hints = hints if hints is not None else BlobHints()
        self._cache: ByteLRU[B3Digest] = ByteLRU(cache_bytes)
        self._lists: OrderedDict[B3Digest, list[tuple[B3Digest, int]]] = OrderedDict()
        self._inflight: dict[B3Digest, trio.Event] = {}
        self._ahead: set[B3Digest] = set()  # being read ahead
        self._prefetch_limiter = trio.CapacityLimiter(_PREFETCH_FETCHES)
        self._limiter = trio.CapacityLimiter(REMOTE_THREADS)
        self.stats = TransferStats()

    @property
    def url(self) -> str:
        return self._transport.url

    async def _stat(self, digest: B3Digest, send_chunks: bool) -> Any | None:
        request = pb.StatBlobRequest(digest=bytes(digest), send_chunks=send_chunks)
        self.stats.stat_calls += 1
        try:
            return await self._transport.call(
                f"stat blob {digest}",
                lambda ticket: ticket.unary(self._stub.Stat, request),
                limiter=self._limiter,
            )
        except NotFoundError:
            return None

    async def has(self, digest: B3Digest) -> bool:
        if digest in self._cache or digest in self._lists:
            return True
        return await self._stat(digest, send_chunks=False) is not None

    async def chunks(self, digest: B3Digest) -> list[tuple[B3Digest, int]] | None:
        response = await self._stat(digest, send_chunks=True)
        if response is None:
            return None
        chunks: list[tuple[B3Digest, int]] = []
        for i, meta in enumerate(response.chunks):
            try:
                chunk_digest = B3Digest(meta.digest)
            except DigestError as exc:
                raise ValidationError(f"blob {digest}: chunk {i} has a bad digest: {exc}") from None
            if meta.size == 0:
                raise ValidationError(f"blob {digest}: chunk {i} is empty")
            chunks.append((chunk_digest, meta.size))
        return chunks

    async def open_read(self, digest: B3Digest) -> BlobReader | None:
        size = self.hints.size_of(digest)
        cached = self._cache.get(digest)
        if cached is None and self._cache_dir is not None:
            kept = await self._cache_dir.blob(digest)
            if kept is not None:
                return kept  # its neighbours are most likely on disk too: no read-ahead
        if size is not None and self._batches and size <= BATCH_MAX_BLOB:
            self._read_batch_ahead(digest, size)
        elif size is not None and size <= PREFETCH_MAX_BLOB:
            self._read_ahead(digest)
        if cached is not None:
            return MemoryBlobReader(cached)
        if size is not None and size <= DIRECT_READ_MAX:
            # Small enough to fetch whole: no Stat round trip first (a Read of
            # the blob digest is answered whole even by a server that chunks it).
            return await self._read_whole(digest, size)
        chunks = self._lists.get(digest)
        if chunks is None:
            chunks = await self.chunks(digest)
            if chunks is None:
                return None
            if chunks:
                await self._verify_list(digest, chunks)
                if self._cache_dir is not None:
                    kept = await self._cache_dir.blob(digest)
                    if kept is not None:
                        return kept
        if chunks:
            self._lists.move_to_end(digest)
            return GrpcChunkedBlobReader(self, digest, chunks)
        return await self._read_whole(digest, size)

    async def _read_whole(self, digest: B3Digest, size: int | None) -> MemoryBlobReader | None:
        try:
            data = await self.fetch_verified(digest, size, keep=True)
        except NotFoundError:
            return None
        return MemoryBlobReader(data)

    async def _verify_list(self, digest: B3Digest, chunks: list[tuple[B3Digest, int]]) -> None:
        """Trust ``chunks`` as ``digest``'s only once their bytes hash to it.

        With a cache, the bytes go to it on the way (kept only if they verify).
        """
        total = sum(size for _, size in chunks)
        expected = self.hints.size_of(digest)
        if expected is not None and total != expected:
            raise IntegrityError(
                f"blob {digest}: its chunk list adds up to {total} bytes, not {expected}"
            )
        writer = await self._cache_dir.blobs.open_write() if self._cache_dir else None
        try:
            actual = await self._hash_chunks(digest, chunks, writer)
            if actual != digest:
                err = IntegrityError(
                    f"blob {digest}: the server's chunk list makes a blob hashing to {actual}"
                )
                log.warning("%s", err)
                raise err
        except BaseException:
            if writer is not None:
                await writer.abort()
            raise
        if writer is not None:
            await writer.finish()
        self._lists[digest] = chunks
        while len(self._lists) > _VERIFIED_LISTS:
            self._lists.popitem(last=False)

    async def _hash_chunks(
        self, digest: B3Digest, chunks: list[tuple[B3Digest, int]], writer: BlobWriter | None
    ) -> B3Digest:
        hasher = blake3.blake3()
        for start in range(0, len(chunks), _CHUNK_FETCHES):
            window = chunks[start : start + _CHUNK_FETCHES]
            fetched: list[bytes] = [b""] * len(window)
            try:
                async with trio.open_nursery() as nursery:
                    for i, (chunk, size) in enumerate(window):
                        nursery.start_soon(self._fetch_into, fetched, i, digest, chunk, size)
            except BaseExceptionGroup as group:
                raise _first_error(group) from None
            for data in fetched:
                hasher.update(data)
                if writer is not None:
                    await writer.write(data)
        return B3Digest(hasher.digest())

    async def _fetch_into(
        self, out: list[bytes], i: int, blob: B3Digest, chunk: B3Digest, size: int
    ) -> None:
        out[i] = await self.chunk(blob, chunk, size, restat=False)

    async def chunk(
        self, blob: B3Digest, digest: B3Digest, size: int, *, restat: bool = True
    ) -> bytes:
        """The verified bytes of one chunk of ``blob``."""
        try:
            return await self.fetch_verified(digest, size)
        except NotFoundError:
            if not restat:
                raise StoreError(
                    f"chunk {digest} of blob {blob} is missing on {self.url}"
                ) from None
            # A server that chunks on demand (tvixmount serve) forgets its
            # chunk index when restarted; a Stat with send_chunks rebuilds it.
            await self.chunks(blob)
        try:
            return await self.fetch_verified(digest, size)
        except NotFoundError:
            raise StoreError(f"chunk {digest} of blob {blob} is missing on {self.url}") from None

    async def fetch_verified(
        self, digest: B3Digest, expected_size: int | None, *, keep: bool = False
    ) -> bytes:
        """The verified bytes of a blob or chunk, from the cache or one Read call.

        Concurrent requests for the same digest share one fetch. ``keep``: a
        blob this call reads goes to the local cache too, once (bytes that were
        in memory or fetched by another were kept by whoever fetched them; a
        chunk is not kept: its blob is, whole, once verified).
        """
        while True:
            cached = self._cache.get(digest)
            if cached is not None:
                if expected_size is not None and len(cached) != expected_size:
                    raise IntegrityError(
                        f"blob {digest}: it has {len(cached)} bytes, not the {expected_size} "
                        "expected"
                    )
                return cached
            pending = self._inflight.get(digest)
            if pending is None:
                break
            await pending.wait()
        limit = MAX_UNHINTED_BYTES if expected_size is None else expected_size
        done = self._inflight[digest] = trio.Event()
        try:
            data = await self._transport.call(
                f"read blob {digest}",
                partial(_fetch_verified, self._stub, digest, expected_size, limit),
                stream=True,
                limiter=self._limiter,
            )
        except IntegrityError as exc:
            log.warning("%s", exc)
            raise
        finally:
            del self._inflight[digest]
            done.set()
        self.stats.read_calls += 1
        self.stats.bytes_received += len(data)
        self._cache.put(digest, data)
        if keep and self._cache_dir is not None:
            self._cache_dir.keep_blob(digest, data)
        return data

    def _fetched(self, digest: B3Digest) -> bool:
        return digest in self._cache or digest in self._inflight

    def read_directory_ahead(self, directory: Directory, below: list[Directory]) -> None:
        """A mount is looking into ``directory``: fetch its first small files (half a
        window) and the first few of each Directory ``below`` it, in one call.

        A walk opens them next: fetched now, the first open in the directory
        does not wait for a round trip, nor, as they were fetched when their
        parent was entered, the first open in each directory the walk goes
        into. Only with ReadMany (with Reads that would be a call per file,
        for files that may never be opened).
        """
        if not self._batches:
            return
        wanted: dict[B3Digest, int] = {}
        budget = self._add_small(wanted, directory.files, BATCH_FILES // 2, BATCH_BYTES)
        for nearby in below:
            budget = self._add_small(wanted, nearby.files, SUBDIRECTORY_FILES, budget)
        self._start_batch(wanted)

    def _add_small(
        self, wanted: dict[B3Digest, int], files: Iterable[FileNode], count: int, budget: int
    ) -> int:
        """Add to ``wanted`` the first ``count`` of ``files`` a ReadMany window takes (small,
        not fetched yet) until one would pass ``budget`` bytes; the bytes left."""
        for node in files:
            if count == 0:
                break
            if (
                0 < node.size <= BATCH_MAX_BLOB
                and node.digest not in wanted  # (two files of one content)
                and not self._fetched(node.digest)
            ):
                if node.size > budget:
                    break
                wanted[node.digest] = node.size
                budget -= node.size
                count -= 1
        return budget

    def _start_batch(self, wanted: dict[B3Digest, int]) -> None:
        if wanted:
            events = {digest: trio.Event() for digest in wanted}
            self._inflight.update(events)
            trio.lowlevel.spawn_system_task(
                self._read_batch, list(wanted.items()), events, name="read blobs"
            )

    def _read_batch_ahead(self, digest: B3Digest, size: int) -> None:
        """Fetch ``digest`` (unless fetched) and the next small files of its Directory, in one call.

        The window is fetched again once the file half a window ahead is not
        fetched yet: a walk in name order then has the files it opens next in
        memory, at one call per half window. The window's big files (too big
        for it) are fetched beside it, each in a Read of its own: read whole
        before its open returns, a big file would stall the walk that much.
        """
        after = self.hints.after(digest, BATCH_FILES)
        half = after[min(BATCH_FILES // 2, len(after)) - 1] if after else None
        missing = not self._fetched(digest)
        if not missing and (half is None or self._fetched(half.digest)):
            return
        wanted = {digest: size} if missing else {}
        self._add_small(wanted, after, BATCH_FILES, BATCH_BYTES - sum(wanted.values()))
        self._start_batch(wanted)
        big: list[FileNode] = []
        big_total = 0
        for node in after:
            fits = big_total + node.size <= BIG_AHEAD_BYTES
            if BATCH_MAX_BLOB < node.size <= DIRECT_READ_MAX and fits:
                big.append(node)
                big_total += node.size
        self._fetch_ahead(big)

    async def _read_batch(
        self, wanted: list[tuple[B3Digest, int]], events: dict[B3Digest, trio.Event]
    ) -> None:
        def done(digest: B3Digest) -> None:
            event = events.pop(digest, None)  # None: delivered already (a retried call)
            if event is None:
                return
            if self._inflight.get(digest) is event:
                del self._inflight[digest]
            event.set()

        def delivered(blobs: list[tuple[B3Digest, bytes]]) -> None:
            for digest, data in blobs:
                self.stats.bytes_received += len(data)
                self._cache.put(digest, data)
                if self._cache_dir is not None:
                    self._cache_dir.keep_blob(digest, data)
                done(digest)

        try:
            if self._cache_dir is not None:
                for digest, _ in wanted:
                    if await self._cache_dir.blobs.has(digest):
                        done(digest)
                wanted = [(digest, size) for digest, size in wanted if digest in events]
            if wanted:
                self.stats.read_calls += 1
                await self._transport.call(
                    f"read {len(wanted)} blobs",
                    partial(_fetch_many, self._batch_stub, wanted, delivered),
                    stream=True,
                    limiter=self._limiter,
                )
        except Unimplemented:
            log.debug("%s has no ReadMany; reading blob by blob", self.url)
            self._batches = False
        except IntegrityError as exc:  # the opens waiting read their blobs alone
            log.warning("%s", exc)
        except TvixmountError as exc:
            log.debug("reading blobs ahead: %s", exc)
        finally:
            for digest in list(events):
                done(digest)

    def _read_ahead(self, digest: B3Digest) -> None:
        """Fetch the next few small files after ``digest``'s in its Directory, in the background.

        Called on every open of a small file, so a walk in name order (tar, a
        build reading a directory) keeps a window of files fetched ahead of it,
        while a program picking single files costs at most the window each.
        """
        self._fetch_ahead(
            node
            for node in self.hints.after(digest, READ_AHEAD_FILES)
            if 0 < node.size <= PREFETCH_MAX_BLOB
        )

    def _fetch_ahead(self, nodes: Iterable[FileNode]) -> None:
        """Fetch ``nodes`` not fetched yet in the background, a Read each (a few at once)."""
        wanted = []
        for node in nodes:
            if not self._fetched(node.digest) and node.digest not in self._ahead:
                wanted.append(node)
                self._ahead.add(node.digest)
        if wanted:
            trio.lowlevel.spawn_system_task(self._prefetch, wanted, name="read blobs ahead")

    async def _prefetch(self, nodes: list[FileNode]) -> None:
        async def one(node: FileNode) -> None:
            async with self._prefetch_limiter:
                if node.digest in self._cache:
                    return
                try:
                    if self._cache_dir is not None and await self._cache_dir.blobs.has(node.digest):
                        return
                    await self.fetch_verified(node.digest, node.size, keep=True)
                except TvixmountError as exc:  # the open that needs it reports it
                    log.debug("prefetching blob %s: %s", node.digest, exc)

        try:
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(one, node)
        finally:
            self._ahead.difference_update(node.digest for node in nodes)

    async def upload(self, digest: B3Digest, spool: Any) -> None:
        """Put the spooled bytes; the server must answer with the same digest."""

        def put(ticket: Ticket) -> bytes:
            spool.seek(0)
            messages = iter(lambda: spool.read(PUT_CHUNK_SIZE), b"")
            answer = ticket.unary(self._stub.Put, (pb.BlobChunk(data=data) for data in messages))
            return bytes(answer.digest)

        answered = await self._transport.call(f"put blob {digest}", put, stream=True)
        if answered != digest:
            raise IntegrityError(
                f"put blob {digest}: {self.url} answered with digest {answered.hex()}"
            )

    async def open_write(self) -> GrpcBlobWriter:
        return GrpcBlobWriter(self)

    async def aclose(self) -> None:
        pass  # the transport (shared by the store's three clients) closes the channel

"""BlobService client for ``tvix.castore.v1.BlobService`` over gRPC.

Reads hand out only verified bytes. When the server's Stat reports a chunk
list, a positioned read fetches just the chunks covering the range (each via
``Read`` of the chunk digest, as tvix does) and verifies each against its
chunk digest; otherwise the whole blob is fetched once and verified against
the blob digest. Verified chunks and blobs live in a small LRU bounded by
bytes, so re-reading or re-opening does not re-fetch them.

Known limit (shared with tvix without bao): a chunk list is trusted as the
server sends it; every chunk is verified, but the list itself is only checked
for well-formedness.
"""

from __future__ import annotations

import bisect
import logging
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any

import blake3
import trio

from ..._proto import rpc_blobstore_pb2 as pb
from ..._proto import rpc_blobstore_pb2_grpc as pb_grpc
from ...castore.digest import B3Digest
from ...errors import DigestError, IntegrityError, NotFoundError, StoreError, ValidationError
from ..memory.castore import MemoryBlobReader
from .transport import GrpcTransport

log = logging.getLogger(__name__)

PUT_CHUNK_SIZE = 1 << 20  # bytes per BlobChunk message we send
_SPOOL_IN_MEMORY = 16 << 20  # a blob being written moves to a temp file past this
DEFAULT_CACHE_BYTES = 256 << 20


@dataclass
class TransferStats:
    """What the client fetched: lets tests and benchmarks see re-fetching."""

    read_calls: int = 0
    bytes_received: int = 0


class VerifiedCache:
    """LRU of verified byte strings (whole blobs or chunks), bounded by total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[B3Digest, bytes] = OrderedDict()
        self._bytes = 0

    def get(self, digest: B3Digest) -> bytes | None:
        data = self._items.get(digest)
        if data is not None:
            self._items.move_to_end(digest)
        return data

    def put(self, digest: B3Digest, data: bytes) -> None:
        if len(data) > self.max_bytes or digest in self._items:
            return
        self._items[digest] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= len(evicted)


def _fetch_verified(
    stub: Any, digest: B3Digest, expected_size: int | None, timeout: float
) -> bytes:
    """One Read call (in a worker thread): the blob's bytes, verified against ``digest``."""
    hasher = blake3.blake3()
    parts: list[bytes] = []
    received = 0
    for message in stub.Read(pb.ReadBlobRequest(digest=bytes(digest)), timeout=timeout):
        data = message.data
        received += len(data)
        if expected_size is not None and received > expected_size:
            raise IntegrityError(
                f"blob {digest}: the server sent more than the {expected_size} bytes announced"
            )
        hasher.update(data)
        parts.append(data)
    actual = B3Digest(hasher.digest())
    if actual != digest:
        raise IntegrityError(
            f"blob {digest}: the server sent {received} bytes that hash to {actual}, refusing them"
        )
    if expected_size is not None and received != expected_size:
        raise IntegrityError(
            f"blob {digest}: {received} bytes received, but the chunk list says {expected_size}"
        )
    return b"".join(parts)


class GrpcChunkedBlobReader:
    """A chunked blob: each read fetches (or finds cached) only the chunks it covers."""

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
            data = memoryview(await self._chunk(chunk_digest, chunk_size))
            start = self._starts[index]
            parts.append(data[max(offset - start, 0) : min(end - start, chunk_size)])
            index += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _chunk(self, digest: B3Digest, size: int) -> bytes:
        try:
            return await self._service.fetch_verified(digest, size)
        except NotFoundError:
            # A server that chunks on demand (tvixmount serve) forgets its
            # chunk index when restarted; a Stat with send_chunks rebuilds it.
            await self._service.chunks(self._digest)
        try:
            return await self._service.fetch_verified(digest, size)
        except NotFoundError:
            raise StoreError(
                f"chunk {digest} of blob {self._digest} is missing on {self._service.url}"
            ) from None

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
    def __init__(self, transport: GrpcTransport, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._transport = transport
        self._stub = pb_grpc.BlobServiceStub(transport.channel)
        self._cache = VerifiedCache(cache_bytes)
        self._inflight: dict[B3Digest, trio.Event] = {}
        self.stats = TransferStats()

    @property
    def url(self) -> str:
        return self._transport.url

    async def _stat(self, digest: B3Digest, send_chunks: bool) -> Any | None:
        request = pb.StatBlobRequest(digest=bytes(digest), send_chunks=send_chunks)
        try:
            return await self._transport.call(
                f"stat blob {digest}", lambda timeout: self._stub.Stat(request, timeout=timeout)
            )
        except NotFoundError:
            return None

    async def has(self, digest: B3Digest) -> bool:
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

    async def open_read(self, digest: B3Digest) -> MemoryBlobReader | GrpcChunkedBlobReader | None:
        chunks = await self.chunks(digest)
        if chunks is None:
            return None
        if chunks:
            return GrpcChunkedBlobReader(self, digest, chunks)
        try:
            # Unchunked: the whole blob, verified, served from memory.
            return MemoryBlobReader(await self.fetch_verified(digest, None))
        except NotFoundError:
            return None  # removed between Stat and Read

    async def fetch_verified(self, digest: B3Digest, expected_size: int | None) -> bytes:
        """The verified bytes of a blob or chunk, from the cache or one Read call.

        Concurrent requests for the same digest share one fetch.
        """
        while True:
            cached = self._cache.get(digest)
            if cached is not None:
                return cached
            pending = self._inflight.get(digest)
            if pending is None:
                break
            await pending.wait()
        done = self._inflight[digest] = trio.Event()
        try:
            data = await self._transport.call(
                f"read blob {digest}",
                partial(_fetch_verified, self._stub, digest, expected_size),
                stream=True,
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
        return data

    async def upload(self, digest: B3Digest, spool: Any) -> None:
        """Put the spooled bytes; the server must answer with the same digest."""

        def put(timeout: float) -> bytes:
            spool.seek(0)
            messages = iter(lambda: spool.read(PUT_CHUNK_SIZE), b"")
            response = self._stub.Put(
                (pb.BlobChunk(data=data) for data in messages), timeout=timeout
            )
            return bytes(response.digest)

        answered = await self._transport.call(f"put blob {digest}", put, stream=True)
        if answered != digest:
            raise IntegrityError(
                f"put blob {digest}: {self.url} answered with digest {answered.hex()}"
            )

    async def open_write(self) -> GrpcBlobWriter:
        return GrpcBlobWriter(self)

    async def aclose(self) -> None:
        pass  # the transport (shared by the store's three clients) closes the channel

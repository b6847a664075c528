"""The BlobService seam: content-addressed byte blobs.

Contract shared by every implementation (memory, local, gRPC, ...):
- ``open_read`` returns ``None`` for an absent blob; a reader only ever hands
  out bytes that are verified against the digest (or raises
  :class:`~tvixmount.errors.IntegrityError`);
- reads are positioned: ``pread`` never needs the whole blob in memory;
- ``open_write`` streams bytes in and ``finish`` returns the BLAKE3 digest;
  a blob becomes visible under its digest only once it is complete.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Protocol

from .digest import B3Digest


class BlobReader(Protocol):
    @property
    def size(self) -> int: ...

    async def pread(self, offset: int, length: int) -> bytes | memoryview:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the blob)."""
        ...

    async def aclose(self) -> None: ...


class BlobWriter(Protocol):
    async def write(self, data: bytes | memoryview) -> None: ...

    async def finish(self) -> B3Digest:
        """Complete the blob and make it visible; returns its digest."""
        ...

    async def abort(self) -> None:
        """Drop everything written so far."""
        ...


class BlobService(Protocol):
    async def has(self, digest: B3Digest) -> bool: ...

    async def open_read(self, digest: B3Digest) -> BlobReader | None: ...

    async def open_write(self) -> BlobWriter: ...

    async def chunks(self, digest: B3Digest) -> list[tuple[B3Digest, int]] | None:
        """The blob's chunk list (digest, size), ``[]`` if unchunked, ``None`` if absent."""
        ...

    async def aclose(self) -> None: ...


async def put_stream(
    blobs: BlobService, stream: AsyncIterable[bytes] | Iterable[bytes]
) -> B3Digest:
    """Put a blob from a stream of byte chunks; returns its digest."""
    writer = await blobs.open_write()
    try:
        if isinstance(stream, AsyncIterable):
            async for chunk in stream:
                await writer.write(chunk)
        else:
            for chunk in stream:
                await writer.write(chunk)
    except BaseException:
        await writer.abort()
        raise
    return await writer.finish()


async def read_all(reader: BlobReader, chunk_size: int = 1 << 20) -> bytes:
    """The whole blob (for small blobs and tests)."""
    parts = []
    offset = 0
    while offset < reader.size:
        data = await reader.pread(offset, min(chunk_size, reader.size - offset))
        if not data:
            break
        parts.append(bytes(data))
        offset += len(data)
    return b"".join(parts)

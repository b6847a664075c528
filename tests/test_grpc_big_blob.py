"""A 100 MB blob served by ``tvixmount serve``: random positioned reads are right
and fetch only the chunks they cover."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from tests.grpc_serving import Served, serving
from tvixmount.castore import B3Digest
from tvixmount.castore.blobservice import put_stream
from tvixmount.stores import Store, StoreOptions, open_store
from tvixmount.stores.grpc.blobs import GrpcBlobService
from tvixmount.stores.grpc.server import SYNTHETIC_CHUNK_BYTES

BLOB_SIZE = 100 * 1000 * 1000
READS = 64


@pytest.fixture(scope="module")
def big_blob() -> bytes:
    return random.Random(20261122).randbytes(BLOB_SIZE)


@pytest.fixture(scope="module")
def server(big_blob: bytes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("big-blob")
    store_dir = str(base / "store")

    async def put() -> None:
        store = open_store(store_dir, StoreOptions(create=True))
        try:
            await put_stream(store.blobs, [big_blob])
        finally:
            await store.aclose()

    trio.run(put)
    with serving(store_dir, base / "serve.log") as served:
        yield served


@pytest.fixture
async def blobs(server: Served) -> AsyncIterator[GrpcBlobService]:
    store: Store = open_store(server.url)
    try:
        assert isinstance(store.blobs, GrpcBlobService)
        yield store.blobs
    finally:
        await store.aclose()


def _ranges(seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    ranges = [(rng.randrange(BLOB_SIZE), rng.randrange(1, 256 * 1024)) for _ in range(READS)]
    # Straddle a chunk boundary and run past the end of the blob, too.
    ranges += [(3 * SYNTHETIC_CHUNK_BYTES - 100, 300), (BLOB_SIZE - 10, 1000)]
    return ranges


def _chunks_touched(ranges: list[tuple[int, int]]) -> set[int]:
    touched: set[int] = set()
    for offset, length in ranges:
        end = min(offset + length, BLOB_SIZE)
        touched.update(
            range(offset // SYNTHETIC_CHUNK_BYTES, (end - 1) // SYNTHETIC_CHUNK_BYTES + 1)
        )
    return touched


async def test_random_positioned_reads_return_the_right_bytes(
    blobs: GrpcBlobService, big_blob: bytes
) -> None:
    reader = await blobs.open_read(B3Digest.of(big_blob))
    assert reader is not None and reader.size == BLOB_SIZE
    for offset, length in _ranges(1):
        assert bytes(await reader.pread(offset, length)) == big_blob[offset : offset + length]


async def test_random_reads_fetch_each_covering_chunk_once_not_the_whole_blob(
    blobs: GrpcBlobService, big_blob: bytes
) -> None:
    reader = await blobs.open_read(B3Digest.of(big_blob))
    assert reader is not None
    ranges = _ranges(2)
    for _ in range(2):  # the second pass is served from verified chunks in the cache
        for offset, length in ranges:
            await reader.pread(offset, length)
    touched = _chunks_touched(ranges)
    assert blobs.stats.read_calls == len(touched)
    assert blobs.stats.bytes_received <= len(touched) * SYNTHETIC_CHUNK_BYTES
    assert blobs.stats.bytes_received < BLOB_SIZE

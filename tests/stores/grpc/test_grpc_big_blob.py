"""A 100 MB blob served by ``tvixmount serve``: random positioned reads are right,
and the blob is fetched once: its first open verifies the whole chunk list (a
server's chunks must make up the blob, issue 18), later reads fetch nothing."""

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


async def test_random_positioned_reads_return_the_right_bytes(
    blobs: GrpcBlobService, big_blob: bytes
) -> None:
    reader = await blobs.open_read(B3Digest.of(big_blob))
    assert reader is not None and reader.size == BLOB_SIZE
    for offset, length in _ranges(1):
        assert bytes(await reader.pread(offset, length)) == big_blob[offset : offset + length]


async def test_the_first_open_fetches_every_chunk_once_and_reads_fetch_nothing_more(
    blobs: GrpcBlobService, big_blob: bytes
) -> None:
    reader = await blobs.open_read(B3Digest.of(big_blob))
    assert reader is not None
    chunks = -(-BLOB_SIZE // SYNTHETIC_CHUNK_BYTES)
    assert (blobs.stats.read_calls, blobs.stats.bytes_received) == (chunks, BLOB_SIZE)
    for offset, length in _ranges(2):
        assert bytes(await reader.pread(offset, length)) == big_blob[offset : offset + length]
    again = await blobs.open_read(B3Digest.of(big_blob))
    assert again is not None and again.size == BLOB_SIZE
    assert (blobs.stats.read_calls, blobs.stats.bytes_received) == (chunks, BLOB_SIZE)

"""The embedded store's blob writer: the digest it tells before finish, threaded and
written-back big blobs, and NAR ingestion that takes that digest instead of hashing again."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import blake3
import pytest

from tests.fixtures.local_tree import make_tree, nix_dump, requires_nix
from tests.stores.local.blobs import opened, read_blob
from tvixmount.castore import B3Digest
from tvixmount.nar import ingest_nar, write_nar
from tvixmount.nar.ingest import DigestingWriter
from tvixmount.stores.local.castore import PACK_MAX, LocalBlobService, LocalDirectoryService
from tvixmount.stores.memory.castore import MemoryBlobService, MemoryDirectoryService

MIB = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[LocalBlobService, LocalDirectoryService]]:
    with opened(tmp_path / "s", create=True) as opened_store:
        yield opened_store.blobs, opened_store.directories


@pytest.mark.parametrize(
    ("size", "chunk"),
    [
        (0, 1),
        (1000, 100),  # packed, hashed inline
        (PACK_MAX, 64 << 10),  # packed, hashed in a thread
        (MIB - 1, 256 << 10),  # buffered, then spilled to its file at finish
        (3 * MIB + 5, 64 << 10),  # spilled while written
        (20 * MIB + 3, MIB),  # handed to writeback in steps as it is written
    ],
)
async def test_the_digest_told_before_finish_is_the_stored_blobs(
    store: tuple[LocalBlobService, LocalDirectoryService], size: int, chunk: int
) -> None:
    blobs, _ = store
    data = os.urandom(size)
    writer = await blobs.open_write()
    assert isinstance(writer, DigestingWriter)
    for start in range(0, size, chunk):
        await writer.write(data[start : start + chunk])
    told = writer.digest()
    assert told == B3Digest(blake3.blake3(data).digest())
    assert await writer.finish() == told
    assert await read_blob(blobs, told) == data


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@requires_nix
async def test_a_nar_ingested_into_the_embedded_store_matches_one_ingested_into_memory(
    tmp_path: Path, store: tuple[LocalBlobService, LocalDirectoryService]
) -> None:
    """The embedded store's writer tells the digests; the memory store's are computed by
    the ingester: both give the same nodes, and the NAR written back is Nix's."""
    tree = make_tree(tmp_path / "tree")
    (tree / "big").write_bytes(os.urandom(2 * MIB + 17))
    nar = nix_dump(tree)
    blobs, directories = store
    local_root = await ingest_nar(_chunks(nar, 100_000), blobs, directories, b"root")
    memory_blobs = MemoryBlobService()
    memory_root = await ingest_nar(
        _chunks(nar, 100_000), memory_blobs, MemoryDirectoryService(), b"root"
    )
    assert not isinstance(await memory_blobs.open_write(), DigestingWriter)
    assert local_root == memory_root
    written = b"".join([bytes(c) async for c in write_nar(local_root, blobs, directories)])
    assert written == nar

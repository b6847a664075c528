"""The ingestion pipeline's edges: chunk and group boundaries, hand-over back-pressure
and a storer that fails or waits while the walker still has batches to ship."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.fixtures.failing_blobs import FailingBlobs
from tests.fixtures.ingest_roundtrip import ingest_and_write_back
from tests.fixtures.local_tree import make_tree, nix_dump, nix_hash_base32, requires_nix
from tvixmount import nixbase32
from tvixmount.castore import B3Digest, FileNode
from tvixmount.castore import ingest as ingest_module
from tvixmount.castore.ingest import READ_CHUNK, SMALL_FILE, ingest_path
from tvixmount.errors import IngestError, StoreError
from tvixmount.stores import Store, open_store
from tvixmount.stores.memory.castore import (
    MemoryBlobService,
    MemoryBlobWriter,
    MemoryDirectoryService,
)

# Sizes on each side of every boundary the walker and storer switch on.
BOUNDARY_SIZES = [
    0,
    1,
    SMALL_FILE - 1,
    SMALL_FILE,
    SMALL_FILE + 1,
    READ_CHUNK - 1,
    READ_CHUNK,
    READ_CHUNK + 1,
    2 * READ_CHUNK,
    3 * READ_CHUNK + 7,
]


@pytest.fixture
def store() -> Store:
    return open_store("memory://")


def _content(size: int, seed: int) -> bytes:
    # Distinct per file, so no two blobs share a digest by accident.
    block = seed.to_bytes(4, "little") + bytes(range(251))
    return (block * (size // len(block) + 1))[:size]


def _boundary_tree(root: Path) -> Path:
    root.mkdir()
    for i, size in enumerate(BOUNDARY_SIZES):
        path = root / f"f{size}"
        path.write_bytes(_content(size, i))
        if i % 2:
            path.chmod(0o755)
    return root


@requires_nix
@pytest.mark.parametrize("size", BOUNDARY_SIZES)
async def test_file_of_boundary_size_has_the_nar_hash_of_nix_hash(
    tmp_path: Path, store: Store, size: int
) -> None:
    path = tmp_path / "file"
    path.write_bytes(_content(size, size))
    result = await ingest_path(path, store.blobs, store.directories)
    assert nixbase32.encode(result.nar_sha256) == nix_hash_base32(path)


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
async def test_file_of_boundary_size_is_stored_whole_under_its_blake3(
    tmp_path: Path, size: int
) -> None:
    path = tmp_path / "file"
    data = _content(size, size)
    path.write_bytes(data)
    blobs = MemoryBlobService()
    result = await ingest_path(path, blobs, MemoryDirectoryService())
    assert isinstance(result.node, FileNode)
    assert result.node.digest == B3Digest.of(data)
    assert blobs.blobs[result.node.digest] == data


@requires_nix
async def test_tree_of_boundary_sizes_writes_back_as_nix_store_dump(
    tmp_path: Path, store: Store
) -> None:
    tree = _boundary_tree(tmp_path / "tree")
    assert await ingest_and_write_back(tree, store) == nix_dump(tree)


@requires_nix
async def test_walker_held_back_by_the_in_flight_limit_still_matches_nix(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One job per batch and one batch in flight: every ship waits for the storer.
    monkeypatch.setattr(ingest_module, "_BATCH_JOBS", 1)
    monkeypatch.setattr(ingest_module, "_BATCHES_IN_FLIGHT", 1)
    tree = make_tree(tmp_path / "tree")
    assert await ingest_and_write_back(tree, store) == nix_dump(tree)


class _SlowFinishBlobs(MemoryBlobService):
    """Every ``finish`` waits a little, like a store waiting for a durability commit."""

    async def open_write(self) -> MemoryBlobWriter:
        return _SlowFinishWriter(self)


class _SlowFinishWriter(MemoryBlobWriter):
    async def finish(self) -> B3Digest:
        await trio.sleep(0.001)
        return await super().finish()


async def test_store_waiting_in_finish_gets_every_blob_of_a_wide_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "_BATCH_JOBS", 8)
    monkeypatch.setattr(ingest_module, "_BATCHES_IN_FLIGHT", 2)
    wide = tmp_path / "wide"
    wide.mkdir()
    contents = {f"f{i:03d}": _content(i * 37, i) for i in range(300)}
    for name, data in contents.items():
        (wide / name).write_bytes(data)
    blobs = _SlowFinishBlobs()
    await ingest_path(wide, blobs, MemoryDirectoryService())
    assert set(blobs.blobs.values()) == set(contents.values())


@pytest.mark.parametrize("fail_at", [1, 50])
async def test_storer_failing_with_batches_still_to_ship_raises_its_error_without_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    # Far more batches than may be in flight: the walker is blocked shipping
    # when the storer fails, and must be released rather than wait forever.
    monkeypatch.setattr(ingest_module, "_BATCH_JOBS", 1)
    monkeypatch.setattr(ingest_module, "_BATCHES_IN_FLIGHT", 1)
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(200):
        (wide / f"f{i:03d}").write_bytes(_content(100, i))
    directories = MemoryDirectoryService()
    with trio.fail_after(30), pytest.raises(StoreError, match="refused"):
        await ingest_path(wide, FailingBlobs(fail_at), directories)
    assert directories.directories == {}


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs procfs")
async def test_file_longer_than_its_stat_size_is_an_ingest_error(store: Store) -> None:
    # procfs files report size 0 but have contents: the NAR header would lie.
    with pytest.raises(IngestError, match="changed size"):
        await ingest_path("/proc/self/status", store.blobs, store.directories)


def _prefetch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "tvixmount-prefetch"]


async def test_prefetcher_visits_files_in_the_order_the_walker_reads_them(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "nested" / "b-after-deeper").write_bytes(b"sorts after the deeper directory\n")
    read: list[bytes] = []
    real_read_file = ingest_module._read_file

    def recording_read_file(path: bytes, size: int) -> Iterator[bytes]:
        read.append(path)
        return real_read_file(path, size)

    monkeypatch.setattr(ingest_module, "_read_file", recording_read_file)
    await ingest_path(tree, store.blobs, store.directories)
    prefetched = [path for path, _size in ingest_module.regular_files(bytes(tree))]
    assert prefetched == read


@requires_nix
async def test_tree_read_with_the_prefetcher_running_matches_nix(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every read counts as cold (slow, then not cached); the prefetcher may run one file ahead.
    monkeypatch.setattr(ingest_module, "_COLD_READ", -1.0)
    monkeypatch.setattr(ingest_module, "_in_page_cache", lambda path: False)
    monkeypatch.setattr(ingest_module, "_PREFETCH_AHEAD", 1)
    tree = _boundary_tree(tmp_path / "tree")
    make_tree(tree / "sub")
    assert await ingest_and_write_back(tree, store) == nix_dump(tree)


async def test_prefetcher_is_stopped_when_the_ingest_returns(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "_COLD_READ", -1.0)
    monkeypatch.setattr(ingest_module, "_in_page_cache", lambda path: False)
    tree = make_tree(tmp_path / "tree")
    await ingest_path(tree, store.blobs, store.directories)
    assert _prefetch_threads() == []


async def test_prefetcher_skips_a_fifo_and_the_walk_rejects_it_without_hanging(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "_COLD_READ", -1.0)
    monkeypatch.setattr(ingest_module, "_in_page_cache", lambda path: False)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a-first").write_bytes(b"read before the fifo\n")
    os.mkfifo(tree / "b-fifo")
    with trio.fail_after(30), pytest.raises(IngestError, match="FIFO"):
        await ingest_path(tree, store.blobs, store.directories)
    assert _prefetch_threads() == []

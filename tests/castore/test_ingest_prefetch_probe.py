"""The prefetcher starts on a tree read from the disk, not on a slow read of a cached one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.local_tree import make_tree
from tvixmount.castore import ingest as ingest_module
from tvixmount.castore.ingest import ingest_path
from tvixmount.stores import Store, open_store


@pytest.fixture
def store() -> Store:
    return open_store("memory://")


def _count_prefetcher_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    started: list[int] = []
    real = ingest_module._Prefetcher

    def counting(root: bytes, walker_at: int) -> ingest_module._Prefetcher:
        started.append(walker_at)
        return real(root, walker_at)

    monkeypatch.setattr(ingest_module, "_Prefetcher", counting)
    return started


async def test_slow_reads_of_a_cached_tree_start_no_prefetcher(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every read counts as slow, as on a busy machine; the tree was just written.
    monkeypatch.setattr(ingest_module, "_COLD_READ", -1.0)
    started = _count_prefetcher_starts(monkeypatch)
    tree = make_tree(tmp_path / "tree")
    if not ingest_module._in_page_cache(os.fsencode(tree / "hello.txt")):
        pytest.skip("this filesystem cannot tell what is cached (tmpfs refuses RWF_NOWAIT)")
    await ingest_path(tree, store.blobs, store.directories)
    assert started == []


async def test_a_file_out_of_the_page_cache_starts_the_prefetcher(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "_COLD_READ", -1.0)
    started = _count_prefetcher_starts(monkeypatch)
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(8):
        (tree / f"f{i}").write_bytes(os.urandom(8192))
    subprocess.run(["sync"], check=True)
    for i in range(8):
        fd = os.open(tree / f"f{i}", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
        finally:
            os.close(fd)
    # The probe itself may start reading the file in: probe the last one.
    if ingest_module._in_page_cache(os.fsencode(tree / "f7")):
        pytest.skip("this filesystem keeps the file cached (tmpfs) or cannot tell")
    await ingest_path(tree, store.blobs, store.directories)
    assert started == [2]  # after f0 read slowly, f1 was found not cached

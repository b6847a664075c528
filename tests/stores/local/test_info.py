"""``tvixmount info``: paths, NAR size, blob bytes, disk usage and reclaimable bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.local_tree import make_tree, nix_dump, requires_nix
from tests.housekeeping import disk_bytes, import_paths, json_of, one_error_line
from tests.mounting import run_tvixmount


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@requires_nix
def test_info_counts_paths_and_their_nar_size_as_nix_dumps_them(
    tmp_path: Path, store: Path
) -> None:
    trees = [make_tree(tmp_path / "tree"), tmp_path / "file"]
    trees[1].write_bytes(b"a single file\n")
    import_paths(store, *trees)
    info = json_of("info", "--store", store)
    assert info["paths"] == 2
    assert info["narSize"] == sum(len(nix_dump(tree)) for tree in trees)
    files = [p for p in trees[0].rglob("*") if p.is_file() and not p.is_symlink()]
    distinct = {p.read_bytes() for p in files} | {trees[1].read_bytes()}
    assert info["blobBytes"] == sum(len(data) for data in distinct)
    assert info["diskBytes"] == pytest.approx(disk_bytes(store), rel=0.01)
    assert info["reclaimableBytes"] == 0


def test_reclaimable_bytes_are_what_gc_then_frees(tmp_path: Path, store: Path) -> None:
    tree = tmp_path / "big"
    tree.mkdir()
    (tree / "a").write_bytes(os.urandom(2 << 20))
    (tree / "b").write_bytes(b"small\n")
    (doomed,) = import_paths(store, tree)
    run_tvixmount("delete", doomed, "--store", store)
    reclaimable = json_of("info", "--store", store)["reclaimableBytes"]
    assert reclaimable >= 2 << 20
    assert json_of("gc", "--store", store)["freedBytes"] == pytest.approx(reclaimable, rel=0.02)
    assert json_of("info", "--store", store)["reclaimableBytes"] == 0


def test_plain_output_has_one_line_per_figure(tmp_path: Path, store: Path) -> None:
    (tmp_path / "f").write_bytes(b"x\n")
    import_paths(store, tmp_path / "f")
    result = run_tvixmount("info", "--store", store)
    assert result.returncode == 0, result.stderr
    labels = [line.split(":")[0] for line in result.stdout.splitlines()]
    assert labels == [
        "store",
        "paths",
        "NAR size",
        "blob bytes",
        "bytes on disk",
        "reclaimable bytes",
    ]


def test_info_of_a_missing_store_is_one_line(tmp_path: Path) -> None:
    one_error_line(run_tvixmount("info", "--store", tmp_path / "nothing"))

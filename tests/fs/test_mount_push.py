"""Small files reach the kernel's page cache with their open: no READ round trip.

That is when files are opened the stock way (one OPEN per open). In FUSE's
no-open mode, the default where available, no OPEN reaches the daemon and a
small file's first READ brings it whole (``test_mount_no_open``); these
mounts are started with the mode turned off.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.cachestat import PAGE, cached_pages, page_count
from tests.mounting import import_trees, mounted, requires_fuse
from tests.reliability import drop_caches
from tvixmount.fs.mount import NO_OPEN_ENV
from tvixmount.fs.operations import PUSH_MAX

pytestmark = requires_fuse


@pytest.fixture(autouse=True)
def _open_per_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NO_OPEN_ENV, "0")


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    base = tmp_path_factory.mktemp("push")
    tree = base / "tree"
    tree.mkdir()
    (tree / "small").write_bytes(os.urandom(3 * PAGE + 100))
    (tree / "limit").write_bytes(os.urandom(PUSH_MAX))
    (tree / "big").write_bytes(os.urandom(PUSH_MAX + PAGE))
    (tree / "empty").write_bytes(b"")
    (info,) = import_trees(base / "store", tree)
    return tree, str(base / "store"), str(info.store_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="drop_caches needs root")
@pytest.mark.parametrize("name", ["small", "limit"])
def test_opening_a_small_file_puts_all_its_pages_in_the_page_cache(
    imported: tuple[Path, str, str], tmp_path: Path, name: str
) -> None:
    tree, store, path = imported
    with mounted(store, tmp_path / "mnt") as mount:
        target = mount / path / name
        size = target.stat().st_size
        before = cached_pages(target, 0, size)  # this open pushes
        assert before == page_count(size)
        # Pages the kernel dropped (with or without the inode) are read again.
        drop_caches()
        assert target.read_bytes() == (tree / name).read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="drop_caches needs root")
def test_a_file_bigger_than_the_push_limit_is_left_to_readahead(
    imported: tuple[Path, str, str], tmp_path: Path
) -> None:
    tree, store, path = imported
    with mounted(store, tmp_path / "mnt") as mount:
        target = mount / path / "big"
        drop_caches()
        cached = cached_pages(target, 0, PUSH_MAX + PAGE)
        assert cached == 0
        assert target.read_bytes() == (tree / "big").read_bytes()


def test_pushed_bytes_are_the_files_bytes_for_every_reader(
    imported: tuple[Path, str, str], tmp_path: Path
) -> None:
    tree, store, path = imported
    with mounted(store, tmp_path / "mnt") as mount:
        for name in ("small", "limit", "big", "empty"):
            # cmp reads through its own open: the pushed pages are what it sees.
            subprocess.run(["cmp", mount / path / name, tree / name], check=True)
            assert (mount / path / name).read_bytes() == (tree / name).read_bytes()

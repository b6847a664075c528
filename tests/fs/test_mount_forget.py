"""Inodes are freed when the kernel forgets them (observed through statfs's f_files).

The daemon reports its live inode count (the root included) as ``f_files``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.mounting import Mount, make_fixture_store, mounted, requires_fuse
from tests.reliability import drop_caches

pytestmark = requires_fuse


def _live_inodes(mnt: Mount) -> int:
    return os.statvfs(mnt.path).f_files


def _walk(root: Path) -> int:
    count = 0
    for _, dirs, files in os.walk(root):
        count += len(dirs) + len(files)
    return count


def _settles_at(mnt: Mount, expected: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        drop_caches()
        if _live_inodes(mnt) == expected:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Mount]:
    store = make_fixture_store(tmp_path / "store")
    with mounted(store, tmp_path / "mnt", "--list-root") as mount:
        yield mount


def test_fresh_mount_holds_only_the_root(mnt: Mount) -> None:
    assert _live_inodes(mnt) == 1


def test_walking_allocates_inodes(mnt: Mount) -> None:
    assert _walk(mnt.path) > 0
    assert _live_inodes(mnt) > 1


def test_dropping_caches_frees_every_inode(mnt: Mount) -> None:
    _walk(mnt.path)
    assert _settles_at(mnt, 1)


def test_content_is_served_again_after_its_inodes_were_freed(mnt: Mount) -> None:
    deep = mnt / fx.ROOT_DIRECTORY_COMPLICATED / "keep" / ".keep"
    before = os.stat(mnt / fx.ROOT_DIRECTORY_COMPLICATED / "keep").st_ino
    assert deep.read_bytes() == fx.EMPTY_BLOB
    assert _settles_at(mnt, 1)
    assert deep.read_bytes() == fx.EMPTY_BLOB
    assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [".keep", "aa", "keep"]
    after = os.stat(mnt / fx.ROOT_DIRECTORY_COMPLICATED / "keep").st_ino
    assert after != before
    assert os.stat(mnt / fx.ROOT_DIRECTORY_WITH_KEEP).st_ino == after

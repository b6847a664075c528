"""Verified bytes: a blob corrupted on disk after it was served is refused at its next open.

(A blob corrupted before the mount started, and the rest of the store staying
readable, are in test_mount_faults.py; lying gRPC servers in
test_grpc_integrity.py and test_grpc_mount.py.)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.mounting import Mount, make_fixture_store, mounted, requires_fuse
from tests.reliability import drop_caches, flip_blob_bit

pytestmark = requires_fuse


def _read_errno(mnt: Mount, name: bytes) -> int | None:
    with pytest.raises(OSError) as excinfo:
        (mnt / name).read_bytes()
    return excinfo.value.errno


@pytest.fixture
def served_then_corrupted(tmp_path: Path) -> Iterator[Mount]:
    """BLOB_B read once through the mount (so verified), then one bit flipped on disk."""
    store = tmp_path / "store"
    make_fixture_store(store)
    with mounted(str(store), tmp_path / "mnt") as mnt:
        assert (mnt / fx.ROOT_BLOB_B).read_bytes() == fx.BLOB_B
        flip_blob_bit(store, fx.BLOB_B_DIGEST, len(fx.BLOB_B) // 2)
        drop_caches()  # so the next read reaches the daemon, not the page cache
        yield mnt


def test_blob_corrupted_after_it_was_served_is_eio_at_the_next_open(
    served_then_corrupted: Mount,
) -> None:
    mnt = served_then_corrupted
    assert _read_errno(mnt, fx.ROOT_BLOB_B) == errno.EIO
    assert str(fx.BLOB_B_DIGEST) in mnt.log()


def test_other_blobs_stay_readable_after_one_was_corrupted(
    served_then_corrupted: Mount,
) -> None:
    mnt = served_then_corrupted
    assert _read_errno(mnt, fx.ROOT_BLOB_B) == errno.EIO
    assert (mnt / fx.ROOT_BLOB_A).read_bytes() == fx.BLOB_A
    assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [".keep", "aa", "keep"]

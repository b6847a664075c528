"""Verified bytes: a blob corrupted on disk after it was served is refused at its next open.

(A blob corrupted before the mount started, and the rest of the store staying
readable, are in test_mount_faults.py; lying gRPC servers in
test_grpc_integrity.py and test_grpc_mount.py.)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.mounting import Mount, make_fixture_store, mounted, requires_fuse
from tests.reliability import drop_caches, flip_blob_bit
from tvixmount.castore.digest import B3Digest

pytestmark = requires_fuse


def _read_errno(mnt: Mount, name: bytes) -> int | None:
    with pytest.raises(OSError) as excinfo:
        (mnt / name).read_bytes()
    return excinfo.value.errno


@dataclass(frozen=True)
class Case:
    """The blob to corrupt, and another one that must stay readable."""

    root: bytes
    data: bytes
    digest: bytes
    other_root: bytes
    other_data: bytes


# BLOB_B (1 MiB) is a blob file of its own; BLOB_A (2 bytes) lies in a pack.
CASES = {
    "file": Case(fx.ROOT_BLOB_B, fx.BLOB_B, fx.BLOB_B_DIGEST, fx.ROOT_BLOB_A, fx.BLOB_A),
    "packed": Case(fx.ROOT_BLOB_A, fx.BLOB_A, fx.BLOB_A_DIGEST, fx.ROOT_BLOB_B, fx.BLOB_B),
}


@pytest.fixture(params=sorted(CASES))
def served_then_corrupted(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Mount, Case]]:
    """A blob read once through the mount (so verified), then one bit flipped on disk."""
    case = CASES[request.param]
    store = tmp_path / "store"
    make_fixture_store(store)
    with mounted(str(store), tmp_path / "mnt") as mnt:
        assert (mnt / case.root).read_bytes() == case.data
        flip_blob_bit(store, case.digest, len(case.data) // 2)
        drop_caches()  # so the next read reaches the daemon, not the page cache
        yield mnt, case


def test_blob_corrupted_after_it_was_served_is_eio_at_the_next_open(
    served_then_corrupted: tuple[Mount, Case],
) -> None:
    mnt, case = served_then_corrupted
    assert _read_errno(mnt, case.root) == errno.EIO
    assert str(B3Digest(case.digest)) in mnt.log()


def test_other_blobs_stay_readable_after_one_was_corrupted(
    served_then_corrupted: tuple[Mount, Case],
) -> None:
    mnt, case = served_then_corrupted
    assert _read_errno(mnt, case.root) == errno.EIO
    assert (mnt / case.other_root).read_bytes() == case.other_data
    assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [".keep", "aa", "keep"]

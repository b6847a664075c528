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

pytestmark = requires_fuse


def _blob_file(store: Path, digest: bytes) -> Path:
    return store / "blobs" / digest.hex()[:2] / digest.hex()


def _flip_byte(path: Path, offset: int) -> None:
    path.chmod(0o644)
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def _drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        pytest.skip(f"cannot drop kernel caches: {exc}")


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
        _flip_byte(_blob_file(store, fx.BLOB_B_DIGEST), len(fx.BLOB_B) // 2)
        _drop_caches()  # so the next read reaches the daemon, not the page cache
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

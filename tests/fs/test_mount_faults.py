"""Missing or corrupt store content: stat still works, content access fails with EIO."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.mounting import Mount, make_fixture_store, mounted, requires_fuse
from tests.reliability import flip_blob_bit

pytestmark = requires_fuse

COMPLICATED = fx.ROOT_NODES[3]
BLOB_A_ROOT = fx.ROOT_NODES[0]


def _eio(excinfo: pytest.ExceptionInfo[OSError]) -> bool:
    return excinfo.value.errno == errno.EIO


def _read_failure(mnt: Mount, name: bytes) -> tuple[int | None, str]:
    """The errno of reading ``name`` (which must fail) and the server's log so far."""
    with pytest.raises(OSError) as excinfo:
        (mnt / name).read_bytes()
    return excinfo.value.errno, mnt.log()


def test_missing_directory_stat_works(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store", with_directories=False, roots=[COMPLICATED])
    with mounted(store, tmp_path / "mnt") as mnt:
        st = os.stat(mnt / fx.ROOT_DIRECTORY_COMPLICATED)
    assert stat.S_ISDIR(st.st_mode)
    assert st.st_size == fx.DIRECTORY_COMPLICATED.size()


def test_missing_directory_listing_is_eio(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store", with_directories=False, roots=[COMPLICATED])
    with mounted(store, tmp_path / "mnt") as mnt:
        with pytest.raises(OSError) as excinfo:
            os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED)
        log = mnt.log()
    assert _eio(excinfo)
    assert str(fx.DIRECTORY_COMPLICATED.digest()) in log


def test_missing_directory_lookup_below_is_eio(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store", with_directories=False, roots=[COMPLICATED])
    with mounted(store, tmp_path / "mnt") as mnt, pytest.raises(OSError) as excinfo:
        os.stat(mnt / fx.ROOT_DIRECTORY_COMPLICATED / ".keep")
    assert _eio(excinfo)


def test_missing_blob_stat_works(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store", blobs=[], roots=[BLOB_A_ROOT])
    with mounted(store, tmp_path / "mnt") as mnt:
        st = os.stat(mnt / fx.ROOT_BLOB_A)
    assert st.st_size == len(fx.BLOB_A)


def test_missing_blob_read_is_eio_and_logged(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store", blobs=[], roots=[BLOB_A_ROOT])
    with mounted(store, tmp_path / "mnt") as mnt:
        code, log = _read_failure(mnt, fx.ROOT_BLOB_A)
    assert code == errno.EIO
    assert str(fx.BLOB_A_DIGEST) in log


def _corrupt_blob(store_dir: Path, digest: bytes, offset: int) -> None:
    flip_blob_bit(store_dir, digest, offset, mask=0xFF)


def test_corrupted_blob_read_is_eio_and_logged(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store")
    _corrupt_blob(tmp_path / "store", fx.BLOB_B_DIGEST, 500_000)
    with mounted(store, tmp_path / "mnt") as mnt:
        code, log = _read_failure(mnt, fx.ROOT_BLOB_B)
    assert code == errno.EIO
    assert str(fx.BLOB_B_DIGEST) in log


def test_corrupted_packed_blob_read_is_eio_and_logged(tmp_path: Path) -> None:
    # BLOB_A is two bytes: the store keeps it in a pack, next to other small blobs.
    store = make_fixture_store(tmp_path / "store")
    _corrupt_blob(tmp_path / "store", fx.BLOB_A_DIGEST, 1)
    with mounted(store, tmp_path / "mnt") as mnt:
        code, log = _read_failure(mnt, fx.ROOT_BLOB_A)
        assert (mnt / fx.ROOT_BLOB_B).read_bytes() == fx.BLOB_B
    assert code == errno.EIO
    assert str(fx.BLOB_A_DIGEST) in log


def test_corrupted_blob_leaves_the_rest_readable(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store")
    _corrupt_blob(tmp_path / "store", fx.BLOB_B_DIGEST, 7)
    with mounted(store, tmp_path / "mnt") as mnt:
        with pytest.raises(OSError):
            (mnt / fx.ROOT_BLOB_B).read_bytes()
        assert (mnt / fx.ROOT_BLOB_A).read_bytes() == fx.BLOB_A
        assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [".keep", "aa", "keep"]

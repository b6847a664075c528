"""tvix-store's FUSE test matrix against real mounts of the tvix fixtures.

Read-only behaviours share one mount per module; tests that depend on a
fresh kernel cache mount their own.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.mounting import Mount, make_fixture_store, mounted, requires_fuse

pytestmark = requires_fuse

DIR_DIGEST_XATTR = "user.tvix.castore.directory.digest"
BLOB_DIGEST_XATTR = "user.tvix.castore.blob.digest"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_fixture_store(tmp_path_factory.mktemp("matrix") / "store")


@pytest.fixture(scope="module")
def mnt(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    with mounted(store, tmp_path_factory.mktemp("matrix-mnt") / "mnt") as mount:
        yield mount


@pytest.fixture
def fresh_mnt(store: str, tmp_path: Path) -> Iterator[Mount]:
    with mounted(store, tmp_path / "mnt") as mount:
        yield mount


def _errno_of(excinfo: pytest.ExceptionInfo[OSError]) -> int | None:
    return excinfo.value.errno


# -- the root -------------------------------------------------------------


def test_mount_is_live_and_root_is_a_directory(mnt: Mount) -> None:
    st = os.stat(mnt.path)
    assert stat.S_ISDIR(st.st_mode)
    assert st.st_ino == 1


def test_root_listing_is_refused_without_list_root(mnt: Mount) -> None:
    with pytest.raises(PermissionError) as excinfo:
        os.listdir(mnt.path)
    assert _errno_of(excinfo) == errno.EPERM


def test_root_listing_with_list_root_shows_every_store_path(store: str, tmp_path: Path) -> None:
    with mounted(store, tmp_path / "mnt", "--list-root") as mount:
        names = os.listdir(mount.path)
    assert sorted(names) == sorted(os.fsdecode(node.name) for node in fx.ROOT_NODES)


def test_root_attributes(mnt: Mount) -> None:
    st = os.stat(mnt.path)
    assert stat.S_IMODE(st.st_mode) == 0o555
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert (st.st_atime, st.st_mtime, st.st_ctime) == (1, 1, 1)  # as Nix sets them


# -- files ------------------------------------------------------------------


def test_stat_file_at_root(mnt: Mount) -> None:
    st = os.stat(mnt / fx.ROOT_BLOB_A)
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == len(fx.BLOB_A)


def test_read_file_at_root(mnt: Mount) -> None:
    assert (mnt / fx.ROOT_BLOB_A).read_bytes() == fx.BLOB_A


def test_read_large_file_whole(mnt: Mount) -> None:
    data = (mnt / fx.ROOT_BLOB_B).read_bytes()
    assert len(data) == len(fx.BLOB_B)
    assert data == fx.BLOB_B


@pytest.mark.parametrize("offset", [1, 4095, 4097, 65537, 123457, len(fx.BLOB_B) - 3])
def test_read_large_file_at_odd_offsets(mnt: Mount, offset: int) -> None:
    fd = os.open(mnt / fx.ROOT_BLOB_B, os.O_RDONLY)
    try:
        assert os.pread(fd, 10007, offset) == fx.BLOB_B[offset : offset + 10007]
    finally:
        os.close(fd)


def test_read_past_the_end_returns_nothing(mnt: Mount) -> None:
    fd = os.open(mnt / fx.ROOT_BLOB_B, os.O_RDONLY)
    try:
        assert os.pread(fd, 100, len(fx.BLOB_B) + 5) == b""
    finally:
        os.close(fd)


def test_read_executable_file(mnt: Mount) -> None:
    assert (mnt / fx.ROOT_HELLOWORLD_EXECUTABLE).read_bytes() == fx.HELLOWORLD_BLOB


# -- symlinks -------------------------------------------------------------


def test_symlink_readlink(mnt: Mount) -> None:
    assert os.readlink(mnt / fx.ROOT_SYMLINK_TO_A) == os.fsdecode(fx.ROOT_BLOB_A)


def test_stat_through_symlink(mnt: Mount) -> None:
    st = os.stat(mnt / fx.ROOT_SYMLINK_TO_A)
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == len(fx.BLOB_A)


def test_read_through_symlink(mnt: Mount) -> None:
    assert (mnt / fx.ROOT_SYMLINK_TO_A).read_bytes() == fx.BLOB_A


def test_dangling_symlink_stat_is_enoent(mnt: Mount) -> None:
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / fx.ROOT_SYMLINK_ABSOLUTE)


def test_dangling_symlink_lstat_works(mnt: Mount) -> None:
    st = os.lstat(mnt / fx.ROOT_SYMLINK_ABSOLUTE)
    assert stat.S_ISLNK(st.st_mode)


# -- directories ------------------------------------------------------------


def test_stat_directory(mnt: Mount) -> None:
    st = os.stat(mnt / fx.ROOT_DIRECTORY_WITH_KEEP)
    assert stat.S_ISDIR(st.st_mode)


def test_read_blob_inside_directory(mnt: Mount) -> None:
    assert (mnt / fx.ROOT_DIRECTORY_WITH_KEEP / ".keep").read_bytes() == fx.EMPTY_BLOB


def test_read_blob_deep_inside_directory(mnt: Mount) -> None:
    path = mnt / fx.ROOT_DIRECTORY_COMPLICATED / "keep" / ".keep"
    assert path.read_bytes() == fx.EMPTY_BLOB


def test_readdir_lists_entries_sorted_by_name(mnt: Mount) -> None:
    assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [".keep", "aa", "keep"]


def test_readdir_entry_types(mnt: Mount) -> None:
    with os.scandir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) as entries:
        kinds = {
            e.name: (e.is_dir(follow_symlinks=False), e.is_symlink(), e.is_file()) for e in entries
        }
    assert kinds == {
        ".keep": (False, False, True),
        "aa": (False, True, False),
        "keep": (True, False, False),
    }


def test_readdir_deep_without_touching_the_parent(fresh_mnt: Mount) -> None:
    assert os.listdir(fresh_mnt / fx.ROOT_DIRECTORY_COMPLICATED / "keep") == [".keep"]


def test_lookup_below_a_file_is_enotdir(mnt: Mount) -> None:
    with pytest.raises(NotADirectoryError):
        os.stat(mnt / fx.ROOT_BLOB_A / "x")


def test_missing_name_in_directory_is_enoent(mnt: Mount) -> None:
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / fx.ROOT_DIRECTORY_COMPLICATED / "nope")


# -- attributes -------------------------------------------------------------


def test_file_attributes(mnt: Mount) -> None:
    st = os.stat(mnt / fx.ROOT_BLOB_A)
    assert stat.S_IMODE(st.st_mode) == 0o444
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert (st.st_atime, st.st_mtime, st.st_ctime) == (1, 1, 1)  # as Nix sets them
    assert st.st_size == len(fx.BLOB_A)


def test_executable_attributes(mnt: Mount) -> None:
    st = os.stat(mnt / fx.ROOT_HELLOWORLD_EXECUTABLE)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o555
    assert st.st_size == len(fx.HELLOWORLD_BLOB)


def test_directory_attributes(mnt: Mount) -> None:
    st = os.stat(mnt / fx.ROOT_DIRECTORY_COMPLICATED)
    assert stat.S_IMODE(st.st_mode) == 0o555
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert (st.st_atime, st.st_mtime, st.st_ctime) == (1, 1, 1)  # as Nix sets them
    assert st.st_size == fx.DIRECTORY_COMPLICATED.size()


def test_symlink_attributes(mnt: Mount) -> None:
    st = os.lstat(mnt / fx.ROOT_SYMLINK_TO_A)
    assert stat.S_ISLNK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o444
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert (st.st_atime, st.st_mtime, st.st_ctime) == (1, 1, 1)  # as Nix sets them


# -- inode identity -----------------------------------------------------------


def test_same_directory_content_has_same_inode(mnt: Mount) -> None:
    a = os.stat(mnt / fx.ROOT_DIRECTORY_WITH_KEEP)
    b = os.stat(mnt / fx.ROOT_DIRECTORY_COMPLICATED / "keep")
    assert a.st_ino == b.st_ino


def test_same_file_content_has_same_inode(mnt: Mount) -> None:
    a = os.stat(mnt / fx.ROOT_DIRECTORY_WITH_KEEP / ".keep")
    b = os.stat(mnt / fx.ROOT_DIRECTORY_COMPLICATED / ".keep")
    assert a.st_ino == b.st_ino


def test_same_symlink_target_has_same_inode(mnt: Mount) -> None:
    a = os.lstat(mnt / fx.ROOT_SYMLINK_ABSOLUTE)
    b = os.lstat(mnt / fx.ROOT_DIRECTORY_COMPLICATED / "aa")
    assert a.st_ino == b.st_ino


def test_different_content_has_different_inodes(mnt: Mount) -> None:
    a = os.stat(mnt / fx.ROOT_BLOB_A)
    b = os.stat(mnt / fx.ROOT_BLOB_B)
    assert a.st_ino != b.st_ino


# -- xattrs -----------------------------------------------------------------


def test_directory_digest_xattr(mnt: Mount) -> None:
    value = os.getxattr(mnt / fx.ROOT_DIRECTORY_COMPLICATED, DIR_DIGEST_XATTR)
    assert value == str(fx.DIRECTORY_COMPLICATED.digest()).encode()


def test_file_digest_xattr(mnt: Mount) -> None:
    value = os.getxattr(mnt / fx.ROOT_BLOB_A, BLOB_DIGEST_XATTR)
    assert value == str(fx.BLOB_A_DIGEST).encode()


def test_listxattr_names_the_digest(mnt: Mount) -> None:
    assert os.listxattr(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [DIR_DIGEST_XATTR]
    assert os.listxattr(mnt / fx.ROOT_BLOB_A) == [BLOB_DIGEST_XATTR]


def test_unknown_xattr_is_enodata(mnt: Mount) -> None:
    with pytest.raises(OSError) as excinfo:
        os.getxattr(mnt / fx.ROOT_DIRECTORY_COMPLICATED, "user.foo")
    assert _errno_of(excinfo) == errno.ENODATA


def test_blob_xattr_on_directory_is_enodata(mnt: Mount) -> None:
    with pytest.raises(OSError) as excinfo:
        os.getxattr(mnt / fx.ROOT_DIRECTORY_COMPLICATED, BLOB_DIGEST_XATTR)
    assert _errno_of(excinfo) == errno.ENODATA


def test_xattr_with_too_small_a_buffer_is_erange(mnt: Mount) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(4)
    path = os.fsencode(mnt / fx.ROOT_BLOB_A)
    assert libc.getxattr(path, BLOB_DIGEST_XATTR.encode(), buf, ctypes.c_size_t(4)) == -1
    assert ctypes.get_errno() == errno.ERANGE


def test_xattrs_disabled_is_eopnotsupp(store: str, tmp_path: Path) -> None:
    with (
        mounted(store, tmp_path / "mnt", "--no-xattr") as mount,
        pytest.raises(OSError) as excinfo,
    ):
        os.getxattr(mount / fx.ROOT_DIRECTORY_COMPLICATED, DIR_DIGEST_XATTR)
    assert _errno_of(excinfo) == errno.EOPNOTSUPP


# -- names in the root ------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "foo",  # not a store path
        "0" * 32,  # no name part
        "e" * 32 + "-test",  # 'e' is not nixbase32
        "z" * 32 + "-test",  # valid, but no such PathInfo
    ],
)
def test_wrong_names_in_root_are_enoent(mnt: Mount, name: str) -> None:
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / name)


def test_root_node_with_another_name_is_enoent(mnt: Mount) -> None:
    # Same digest as ROOT_BLOB_A, so the PathInfo is found, but its node is named "...-test".
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / ("0" * 32 + "-tes"))


# -- writes -----------------------------------------------------------------


def _assert_erofs(excinfo: pytest.ExceptionInfo[OSError]) -> None:
    assert _errno_of(excinfo) == errno.EROFS


def test_create_is_erofs(mnt: Mount) -> None:
    with pytest.raises(OSError) as excinfo:
        os.open(mnt / fx.ROOT_DIRECTORY_COMPLICATED / "new", os.O_CREAT | os.O_WRONLY, 0o644)
    _assert_erofs(excinfo)


def test_mkdir_is_erofs(mnt: Mount) -> None:
    with pytest.raises(OSError) as excinfo:
        os.mkdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED / "newdir")
    _assert_erofs(excinfo)


def test_unlink_is_erofs(mnt: Mount) -> None:
    with pytest.raises(OSError) as excinfo:
        os.unlink(mnt / fx.ROOT_DIRECTORY_COMPLICATED / ".keep")
    _assert_erofs(excinfo)


def test_open_for_writing_is_erofs(mnt: Mount) -> None:
    with pytest.raises(OSError) as excinfo:
        os.open(mnt / fx.ROOT_BLOB_A, os.O_WRONLY)
    _assert_erofs(excinfo)


def test_statfs_answers(mnt: Mount) -> None:
    st = os.statvfs(mnt.path)
    assert st.f_namemax == 255

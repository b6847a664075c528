"""Real FUSE mounts with ``--store grpc+http://127.0.0.1:PORT``: the fixture matrix
through ``tvixmount serve``, a lying server, and a server restart mid-mount."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.grpc_serving import FakeBackend, Served, fake_server, serving, stop
from tests.mounting import Mount, make_fixture_store, mounted, requires_fuse
from tvixmount.castore.nodes import Node
from tvixmount.pathinfo.model import NarInfo, PathInfo

pytestmark = requires_fuse


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("grpc-matrix")
    store = make_fixture_store(base / "store")
    with serving(store, base / "serve.log") as server:
        yield server


@pytest.fixture(scope="module")
def mnt(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    with mounted(served.url, tmp_path_factory.mktemp("grpc-matrix-mnt") / "mnt") as mount:
        yield mount


def _read(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read()


def _errno_of(excinfo: pytest.ExceptionInfo[OSError]) -> int | None:
    return excinfo.value.errno


def test_blob_b_reads_through_grpc(mnt: Mount) -> None:
    assert _read(mnt / fx.ROOT_BLOB_B) == fx.BLOB_B


def test_executable_file_has_mode_0555_and_its_content(mnt: Mount) -> None:
    path = mnt / fx.ROOT_HELLOWORLD_EXECUTABLE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o555
    assert _read(path) == fx.HELLOWORLD_BLOB


def test_readdir_lists_entries_sorted_by_raw_name(mnt: Mount) -> None:
    assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [".keep", "aa", "keep"]


def test_nested_directory_lists_through_grpc(mnt: Mount) -> None:
    assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED / "keep") == [".keep"]


def test_symlink_target_reads_through_grpc(mnt: Mount) -> None:
    assert os.readlink(mnt / fx.ROOT_SYMLINK_ABSOLUTE) == "/nix/store/somewhereelse"


def test_unknown_store_path_is_enoent(mnt: Mount) -> None:
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / ("7" * 32 + "-test"))


def test_missing_blob_is_eio_while_other_paths_still_serve(tmp_path: Path) -> None:
    store = make_fixture_store(
        tmp_path / "store", blobs=[fx.EMPTY_BLOB, fx.HELLOWORLD_BLOB, fx.BLOB_B]
    )
    with (
        serving(store, tmp_path / "serve.log") as server,
        mounted(server.url, tmp_path / "mnt") as mnt,
    ):
        assert os.stat(mnt / fx.ROOT_BLOB_A).st_size == len(fx.BLOB_A)
        with pytest.raises(OSError) as excinfo:
            _read(mnt / fx.ROOT_BLOB_A)
        assert _read(mnt / fx.ROOT_HELLOWORLD_EXECUTABLE) == fx.HELLOWORLD_BLOB
    assert _errno_of(excinfo) == errno.EIO


def _lying_backend() -> FakeBackend:
    """Correct path infos; BLOB_A's bytes and DIRECTORY_COMPLICATED are swapped for others."""
    backend = FakeBackend()
    roots: list[Node] = [fx.ROOT_NODES[i] for i in (0, 3, 6)]
    for node in roots:
        info = PathInfo(node, (), NarInfo(0, bytes(32)))
        backend.pathinfos[info.store_path.digest] = info.to_proto()
    backend.blobs[bytes(fx.HELLOWORLD_DIGEST)] = fx.HELLOWORLD_BLOB
    backend.blobs[bytes(fx.BLOB_A_DIGEST)] = b"\x00\x02"
    backend.directories[bytes(fx.DIRECTORY_COMPLICATED.digest())] = [
        fx.DIRECTORY_WITH_KEEP.to_proto()
    ]
    return backend


def test_lying_server_content_is_eio_logged_and_other_paths_still_serve(
    tmp_path: Path,
) -> None:
    with fake_server(_lying_backend()) as url, mounted(url, tmp_path / "mnt") as mnt:
        with pytest.raises(OSError) as blob_error:
            _read(mnt / fx.ROOT_BLOB_A)
        with pytest.raises(OSError) as directory_error:
            os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED)
        assert _read(mnt / fx.ROOT_HELLOWORLD_EXECUTABLE) == fx.HELLOWORLD_BLOB
        log = mnt.log()
    assert _errno_of(blob_error) == errno.EIO
    assert _errno_of(directory_error) == errno.EIO
    assert f"blob {fx.BLOB_A_DIGEST}" in log and "hash to" in log
    assert f"get directory {fx.DIRECTORY_COMPLICATED.digest()}" in log


def test_server_restart_mid_mount_is_eio_while_down_and_serves_after(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store")
    log_file = tmp_path / "serve.log"
    with serving(store, log_file) as first, mounted(first.url, tmp_path / "mnt") as mnt:
        assert _read(mnt / fx.ROOT_HELLOWORLD_EXECUTABLE) == fx.HELLOWORLD_BLOB
        stop(first.process)
        with pytest.raises(OSError) as lookup_error:
            os.stat(mnt / fx.ROOT_BLOB_B)
        with pytest.raises(OSError) as listing_error:
            os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED)
        with serving(store, log_file, listen=f"127.0.0.1:{first.port}"):
            assert _read(mnt / fx.ROOT_BLOB_B) == fx.BLOB_B
            assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [".keep", "aa", "keep"]
    assert _errno_of(lookup_error) == errno.EIO
    assert _errno_of(listing_error) == errno.EIO

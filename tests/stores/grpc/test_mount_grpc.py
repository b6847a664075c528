"""Mounting from a gRPC store (``tvixmount serve`` over a unix socket)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fixtures import castore as fx
from tests.grpc_serving import serving
from tests.mounting import Mount, make_fixture_store, mounted, requires_fuse

pytestmark = requires_fuse


@pytest.fixture(scope="module")
def grpc_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("grpc")
    store = make_fixture_store(base / "store")
    with serving(store, base / "serve.log", listen=f"unix://{base / 'tvix.sock'}") as served:
        yield served.url


@pytest.fixture(scope="module")
def mnt(grpc_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    with mounted(grpc_url, tmp_path_factory.mktemp("grpc-mnt") / "mnt") as mount:
        yield mount


def test_read_large_file_over_grpc(mnt: Mount) -> None:
    assert (mnt / fx.ROOT_BLOB_B).read_bytes() == fx.BLOB_B


def test_read_at_an_odd_offset_over_grpc(mnt: Mount) -> None:
    fd = os.open(mnt / fx.ROOT_BLOB_B, os.O_RDONLY)
    try:
        assert os.pread(fd, 7777, 333_333) == fx.BLOB_B[333_333 : 333_333 + 7777]
    finally:
        os.close(fd)


def test_readdir_over_grpc(mnt: Mount) -> None:
    assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [".keep", "aa", "keep"]


def test_unknown_name_over_grpc_is_enoent(mnt: Mount) -> None:
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / ("z" * 32 + "-test"))


def test_symlink_over_grpc(mnt: Mount) -> None:
    assert os.readlink(mnt / fx.ROOT_SYMLINK_TO_A) == os.fsdecode(fx.ROOT_BLOB_A)

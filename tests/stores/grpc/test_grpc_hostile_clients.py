"""Hostile clients of ``tvixmount serve`` (issue 18): read-only by default; a writable
server never replaces a store path, and keeps only PathInfos whose content is there
and checks out (NarHash, content address; Nix is the oracle for CA paths)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.grpc_serving import Served, serving
from tests.mounting import requires_nix
from tvixmount.castore import B3Digest, Directory, DirectoryNode, FileNode
from tvixmount.castore.blobservice import put_stream
from tvixmount.castore.nodes import Node
from tvixmount.errors import ValidationError
from tvixmount.nar.writer import calculate_nar
from tvixmount.pathinfo.model import CAHash, ContentAddress, NarInfo, PathInfo
from tvixmount.storepath import StorePath
from tvixmount.stores import Store, open_store
from tvixmount.stores.grpc.status import PermissionDeniedError
from tvixmount.stores.memory.castore import MemoryBlobService, MemoryDirectoryService

PATH = "a" * 32 + "-hostile"


@pytest.fixture(scope="module")
def writable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("writable")
    with serving("memory://", base / "serve.log", writable=True) as served:
        yield served


@pytest.fixture
def url(writable: Served) -> str:
    """The conftest's ``client`` opens this server."""
    return writable.url


async def _nar(node: Node, blobs: list[bytes], directories: list[Directory]) -> NarInfo:
    """The NarInfo of ``node`` over the given content (computed locally)."""
    local_blobs, local_directories = MemoryBlobService(), MemoryDirectoryService()
    for blob in blobs:
        await put_stream(local_blobs, [blob])
    if directories:
        await local_directories.put_many(directories)
    return NarInfo(*await calculate_nar(node, local_blobs, local_directories))


async def _file_info(client: Store, name: str, data: bytes) -> PathInfo:
    await put_stream(client.blobs, [data])
    node = FileNode(name.encode(), B3Digest.of(data), len(data))
    return PathInfo(node, (), await _nar(node, [data], []))


async def test_a_read_only_server_refuses_every_put(tmp_path: Path) -> None:
    with serving("memory://", tmp_path / "serve.log") as served:
        store = open_store(served.url)
        try:
            with pytest.raises(PermissionDeniedError, match="read-only"):
                await put_stream(store.blobs, [b"not welcome"])
            with pytest.raises(PermissionDeniedError, match="read-only"):
                await store.directories.put_many([fx.DIRECTORY_WITH_KEEP])
            info = PathInfo(FileNode(PATH.encode(), fx.EMPTY_DIGEST, 0), (), NarInfo(0, bytes(32)))
            with pytest.raises(PermissionDeniedError, match="read-only"):
                await store.pathinfos.put(info)
        finally:
            await store.aclose()


async def test_a_store_path_is_never_replaced_and_the_same_put_is_a_no_op(client: Store) -> None:
    name = "b" * 32 + "-kept"
    first = await _file_info(client, name, b"the original\n")
    assert await client.pathinfos.put(first) == first
    assert await client.pathinfos.put(first) == first
    other = await _file_info(client, name, b"a replacement\n")
    with pytest.raises(PermissionDeniedError, match="never replaced"):
        await client.pathinfos.put(other)
    assert await client.pathinfos.get(first.store_path.digest) == first


async def test_a_pathinfo_whose_directory_is_missing_is_refused(client: Store) -> None:
    missing = Directory.from_nodes([FileNode(b"f", fx.EMPTY_DIGEST, 0)])
    node = DirectoryNode(("c" * 32 + "-nodir").encode(), missing.digest(), missing.size())
    info = PathInfo(node, (), await _nar(node, [b""], [missing]))
    with pytest.raises(ValidationError, match="Directory it needs is missing"):
        await client.pathinfos.put(info)


async def test_a_pathinfo_whose_blob_is_missing_is_refused(client: Store) -> None:
    await client.directories.put_many(fx.DIRECTORIES)
    data = b"never uploaded"
    directory = Directory.from_nodes([FileNode(b"f", B3Digest.of(data), len(data))])
    await client.directories.put_many([directory])
    node = DirectoryNode(("d" * 32 + "-noblob").encode(), directory.digest(), directory.size())
    info = PathInfo(node, (), await _nar(node, [data], [directory]))
    with pytest.raises(ValidationError, match="is missing"):
        await client.pathinfos.put(info)


async def test_a_pathinfo_with_a_wrong_nar_hash_is_refused(client: Store) -> None:
    info = await _file_info(client, "f" * 32 + "-lies", b"content\n")
    lying = PathInfo(info.node, (), NarInfo(info.narinfo.nar_size, bytes(32)))
    with pytest.raises(ValidationError, match="the PathInfo claims"):
        await client.pathinfos.put(lying)


def _nix_add(args: list[str], path: Path) -> str:
    out = subprocess.run(
        ["nix-store", *args, str(path)], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip()).name


@requires_nix
@pytest.mark.parametrize(
    ("nix_args", "hash_type"),
    [(["--add"], CAHash.NAR_SHA256), (["--add-fixed", "sha256"], CAHash.FLAT_SHA256)],
)
async def test_a_content_address_must_check_out_as_nix_computes_it(
    client: Store, tmp_path: Path, nix_args: list[str], hash_type: CAHash
) -> None:
    data = f"content addressed {hash_type.name}\n".encode()
    source = tmp_path / "ca-file"
    source.write_bytes(data)
    basename = _nix_add(nix_args, source)
    info = await _file_info(client, basename, data)
    if hash_type == CAHash.NAR_SHA256:
        ca = ContentAddress(hash_type, info.narinfo.nar_sha256)
    else:
        ca = ContentAddress(hash_type, hashlib.sha256(data).digest())
    honest = PathInfo(info.node, (), NarInfo(info.narinfo.nar_size, info.narinfo.nar_sha256, ca=ca))
    assert await client.pathinfos.put(honest) == honest
    # The same claim under another name: the CA does not make that store path.
    other = StorePath.parse("g" * 32 + "-ca-file")
    renamed = await _file_info(client, str(other), data)
    lying = PathInfo(renamed.node, (), honest.narinfo)
    with pytest.raises(ValidationError, match="makes the store path"):
        await client.pathinfos.put(lying)
    # A CA of other bytes.
    wrong = ContentAddress(hash_type, bytes(32))
    name = "9" * 32 + "-wrong-ca"
    wrong_info = await _file_info(client, name, data)
    with pytest.raises(ValidationError, match="CA"):
        await client.pathinfos.put(
            PathInfo(wrong_info.node, (), NarInfo(*_nar_of(wrong_info), ca=wrong))
        )


def _nar_of(info: PathInfo) -> tuple[int, bytes]:
    return info.narinfo.nar_size, info.narinfo.nar_sha256


async def test_a_directory_path_whose_content_is_all_there_is_kept(client: Store) -> None:
    for blob in fx.BLOBS:
        await put_stream(client.blobs, [blob])
    await client.directories.put_many(fx.DIRECTORIES)
    root = fx.DIRECTORY_COMPLICATED
    node = DirectoryNode(fx.ROOT_DIRECTORY_COMPLICATED, root.digest(), root.size())
    info = PathInfo(node, (), await _nar(node, list(fx.BLOBS), list(fx.DIRECTORIES)))
    assert await client.pathinfos.put(info) == info
    assert await client.pathinfos.get(info.store_path.digest) == info

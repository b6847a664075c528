"""The gRPC clients against ``tvixmount serve`` (a subprocess) over loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from tests.fixtures import castore as fx
from tests.grpc_serving import Served, serving
from tests.mounting import run_tvixmount
from tvixmount.castore import B3Digest, Directory, DirectoryNode, FileNode, SymlinkNode
from tvixmount.castore.blobservice import put_stream, read_all
from tvixmount.errors import NotFoundError, StoreError, ValidationError
from tvixmount.nar.writer import calculate_nar
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.stores import Store, open_store
from tvixmount.stores.grpc.directories import GrpcDirectoryService
from tvixmount.stores.grpc.pathinfo import GrpcPathInfoService
from tvixmount.stores.grpc.server import DIRECTORY_BATCH, SYNTHETIC_CHUNK_BYTES
from tvixmount.stores.memory.castore import MemoryBlobService, MemoryDirectoryService


@pytest.fixture(scope="module", params=["memory", "local"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One ``serve`` per backing store kind, shared by the tests of this module."""
    base = tmp_path_factory.mktemp(f"serve-{request.param}")
    store = "memory://" if request.param == "memory" else str(base / "store")
    with serving(store, base / "serve.log", writable=True) as served:
        yield served


@pytest.fixture
def url(server: Served) -> str:
    """The conftest's ``client`` opens this server."""
    return server.url


async def _put_fixtures(
    client: Store, node: FileNode | DirectoryNode | SymlinkNode
) -> tuple[int, bytes]:
    """Put the fixture content on the server; ``node``'s NAR size and SHA-256 over a local copy."""
    blobs, directories = MemoryBlobService(), MemoryDirectoryService()
    for blob in fx.BLOBS:
        await put_stream(client.blobs, [blob])
        await put_stream(blobs, [blob])
    await client.directories.put_many(fx.DIRECTORIES)
    await directories.put_many(fx.DIRECTORIES)
    return await calculate_nar(node, blobs, directories)


async def _pathinfo(client: Store, node: FileNode | DirectoryNode | SymlinkNode) -> PathInfo:
    """A PathInfo a writable server keeps: its content is there and its NarHash is right."""
    return PathInfo(node, (), NarInfo(*await _put_fixtures(client, node)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_blob_put_then_read_returns_the_same_bytes(client: Store) -> None:
    digest = await put_stream(client.blobs, [fx.BLOB_B[:1000], fx.BLOB_B[1000:]])
    reader = await client.blobs.open_read(digest)
    assert reader is not None
    assert digest == fx.BLOB_B_DIGEST
    assert await read_all(reader) == fx.BLOB_B


async def test_empty_blob_round_trips(client: Store) -> None:
    digest = await put_stream(client.blobs, [])
    reader = await client.blobs.open_read(digest)
    assert reader is not None
    assert (digest, reader.size) == (fx.EMPTY_DIGEST, 0)


async def test_absent_blob_is_none_and_not_had(client: Store) -> None:
    absent = B3Digest.of(b"never stored")
    assert await client.blobs.open_read(absent) is None
    assert await client.blobs.has(absent) is False
    assert await client.blobs.chunks(absent) is None


async def test_small_blob_has_an_empty_chunk_list(client: Store) -> None:
    digest = await put_stream(client.blobs, [fx.HELLOWORLD_BLOB])
    assert await client.blobs.chunks(digest) == []


async def test_big_blob_is_offered_in_chunks_whose_digests_match_their_ranges(
    client: Store,
) -> None:
    data = bytes(range(256)) * (3 * SYNTHETIC_CHUNK_BYTES // 256 + 7)
    digest = await put_stream(client.blobs, [data])
    chunks = await client.blobs.chunks(digest)
    assert chunks is not None and len(chunks) == 4
    offset = 0
    for chunk_digest, size in chunks:
        assert chunk_digest == blake3.blake3(data[offset : offset + size]).digest()
        offset += size
    assert offset == len(data)


async def test_directories_put_then_get_return_validated_equal_directories(
    client: Store,
) -> None:
    root = await client.directories.put_many(fx.DIRECTORIES)
    assert root == fx.DIRECTORY_COMPLICATED.digest()
    assert await client.directories.get(root) == fx.DIRECTORY_COMPLICATED


async def test_absent_directory_is_none(client: Store) -> None:
    assert await client.directories.get(B3Digest.of(b"no directory")) is None


async def test_a_directory_get_failing_unexpectedly_is_a_store_error_not_a_crash(
    client: Store, url: str
) -> None:
    """The reply is read by a background task: what it does not expect (here grpc's
    ValueError for a closed channel) fails the lookup, and the trio run goes on."""
    root = await client.directories.put_many(fx.DIRECTORIES)
    fresh = open_store(url)
    try:
        assert isinstance(fresh.directories, GrpcDirectoryService)
        fresh.directories._transport.channel.close()
        with pytest.raises(StoreError):
            await fresh.directories.get(root)
    finally:
        await fresh.aclose()


async def test_recursive_get_of_absent_root_raises_not_found(client: Store) -> None:
    with pytest.raises(NotFoundError):
        [d async for d in client.directories.get_recursive(B3Digest.of(b"no directory"))]


def _tree() -> list[Directory]:
    """A three-level tree with a shared subdirectory, leaves first."""
    leaf = Directory.from_nodes([FileNode(b"f", fx.BLOB_A_DIGEST, 2)])
    other = Directory.from_nodes([SymlinkNode(b"l", b"target")])
    middle = Directory.from_nodes(
        [
            DirectoryNode(b"leaf", leaf.digest(), leaf.size()),
            FileNode(b"g", fx.HELLOWORLD_DIGEST, 12),
        ]
    )
    root = Directory.from_nodes(
        [
            DirectoryNode(b"a", middle.digest(), middle.size()),
            DirectoryNode(b"b", other.digest(), other.size()),
            DirectoryNode(b"c", leaf.digest(), leaf.size()),
        ]
    )
    return [leaf, other, middle, root]


async def test_recursive_get_yields_root_first_then_breadth_first(client: Store) -> None:
    tree = _tree()
    root = await client.directories.put_many(tree)
    reference = MemoryDirectoryService()
    await reference.put_many(tree)
    expected = [d async for d in reference.get_recursive(root)]
    received = [d async for d in client.directories.get_recursive(root)]
    assert received == expected
    assert received[0].digest() == root
    assert len(received) == 4


async def test_a_closure_bigger_than_a_server_batch_arrives_whole_in_one_get(
    client: Store,
) -> None:
    # More Directories than the server reads in one trip to its loop.
    leaves = [
        Directory.from_nodes([FileNode(b"f%d" % i, fx.BLOB_A_DIGEST, 2)])
        for i in range(DIRECTORY_BATCH * 2 + 3)
    ]
    root = Directory.from_nodes(
        [DirectoryNode(b"d%04d" % i, leaf.digest(), leaf.size()) for i, leaf in enumerate(leaves)]
    )
    await client.directories.put_many([*leaves, root])
    directories = client.directories
    assert isinstance(directories, GrpcDirectoryService)
    # A miss is answered with the root while the rest streams in; the
    # lookups after it wait for their Directories instead of asking again.
    assert await directories.get(root.digest()) == root
    assert [await directories.get(leaf.digest()) for leaf in leaves] == leaves
    assert directories.get_calls == 1
    received = [d async for d in directories.get_recursive(root.digest())]
    assert received == [root, *leaves]


async def test_put_of_directory_with_unknown_child_is_rejected(client: Store) -> None:
    orphan = Directory.from_nodes([DirectoryNode(b"x", B3Digest.of(b"missing child"), 0)])
    with pytest.raises(ValidationError, match="rejected"):
        await client.directories.put_many([orphan])


async def test_pathinfo_put_then_get_returns_it(client: Store) -> None:
    info = await _pathinfo(client, fx.ROOT_NODES[4])
    assert await client.pathinfos.put(info) == info
    assert await client.pathinfos.get(info.store_path.digest) == info


async def test_absent_pathinfo_is_none(client: Store) -> None:
    assert await client.pathinfos.get(bytes(20)) is None


async def test_list_yields_every_pathinfo_put(client: Store) -> None:
    infos = [await _pathinfo(client, node) for node in fx.ROOT_NODES[:2]]
    for info in infos:
        await client.pathinfos.put(info)
    listed = [info async for info in client.pathinfos.list()]
    assert all(info in listed for info in infos)


async def test_calculate_nar_matches_the_local_nar_writer(client: Store) -> None:
    node = fx.ROOT_NODES[3]
    expected = await _put_fixtures(client, node)
    assert isinstance(client.pathinfos, GrpcPathInfoService)
    assert await client.pathinfos.calculate_nar(node) == expected


async def test_unix_socket_server_serves_the_same_services(tmp_path: Path) -> None:
    socket_path = tmp_path / "tvixmount.sock"
    listen = f"unix://{socket_path}"
    with serving("memory://", tmp_path / "serve.log", listen=listen, writable=True) as served:
        assert served.url == f"grpc+unix://{socket_path}"
        store = open_store(served.url)
        try:
            digest = await put_stream(store.blobs, [fx.BLOB_A])
            assert await store.blobs.has(digest)
        finally:
            await store.aclose()


def test_opening_an_unreachable_address_raises_a_clear_store_error() -> None:
    url = f"grpc+http://127.0.0.1:{_free_port()}"
    with pytest.raises(StoreError, match=r"is unreachable: connection failed"):
        open_store(url)


def test_mount_of_an_unreachable_grpc_store_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    url = f"grpc+http://127.0.0.1:{_free_port()}"
    result = run_tvixmount("mount", tmp_path / "mnt", "--store", url)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"tvixmount: error: gRPC store {url} is unreachable: connection failed"
    )

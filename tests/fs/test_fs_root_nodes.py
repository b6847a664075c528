"""RootNodes providers: store path names via PathInfos, and a Directory as root."""

from __future__ import annotations

from tests.fixtures import castore as fx
from tvixmount.castore.nodes import FileNode
from tvixmount.fs.root_nodes import DirectoryRootNodes
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.pathinfo.root_nodes import PathInfoRootNodes
from tvixmount.stores.memory.pathinfo import MemoryPathInfoService

ROOT_A = fx.ROOT_NODES[0]


async def _pathinfos() -> MemoryPathInfoService:
    service = MemoryPathInfoService()
    for node in fx.ROOT_NODES:
        await service.put(PathInfo(node, (), NarInfo(0, bytes(32))))
    return service


async def test_pathinfo_lookup_finds_the_root_node() -> None:
    roots = PathInfoRootNodes(await _pathinfos())
    assert await roots.lookup(fx.ROOT_BLOB_A) == ROOT_A


async def test_pathinfo_lookup_of_invalid_name_is_absent() -> None:
    roots = PathInfoRootNodes(await _pathinfos())
    assert await roots.lookup(b"not-a-store-path") is None
    assert await roots.lookup(b"\xff" * 40) is None


async def test_pathinfo_lookup_of_unknown_path_is_absent() -> None:
    roots = PathInfoRootNodes(await _pathinfos())
    assert await roots.lookup(b"z" * 32 + b"-test") is None


async def test_pathinfo_lookup_with_another_root_node_name_is_absent() -> None:
    roots = PathInfoRootNodes(await _pathinfos())
    assert await roots.lookup(b"0" * 32 + b"-other") is None


async def test_pathinfo_list_yields_every_root_node() -> None:
    roots = PathInfoRootNodes(await _pathinfos())
    assert sorted([node.name async for node in roots.list()]) == sorted(
        node.name for node in fx.ROOT_NODES
    )


async def test_directory_root_lookup() -> None:
    roots = DirectoryRootNodes(fx.DIRECTORY_COMPLICATED)
    assert await roots.lookup(b".keep") == FileNode(b".keep", fx.EMPTY_DIGEST, 0)
    assert await roots.lookup(b"missing") is None


async def test_directory_root_list_is_sorted_by_name() -> None:
    roots = DirectoryRootNodes(fx.DIRECTORY_COMPLICATED)
    assert [node.name async for node in roots.list()] == [b".keep", b"aa", b"keep"]

"""The fixture castore (:mod:`tests.fixtures.castore`) in memory services, for handler tests."""

from __future__ import annotations

from tests.fixtures import castore as fx
from tvixmount.castore.blobservice import put_stream
from tvixmount.castore.nodes import Node
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.pathinfo.root_nodes import PathInfoRootNodes
from tvixmount.stores.memory.castore import MemoryBlobService, MemoryDirectoryService
from tvixmount.stores.memory.pathinfo import MemoryPathInfoService


async def memory_services(
    *roots: Node,
) -> tuple[MemoryBlobService, MemoryDirectoryService, PathInfoRootNodes]:
    """Every fixture blob and Directory, and ``roots`` as store paths (by default
    every fixture root node)."""
    blobs = MemoryBlobService()
    for blob in fx.BLOBS:
        await put_stream(blobs, [blob])
    directories = MemoryDirectoryService()
    await directories.put_many(fx.DIRECTORIES)
    pathinfos = MemoryPathInfoService()
    for node in roots or fx.ROOT_NODES:
        await pathinfos.put(PathInfo(node, (), NarInfo(0, bytes(32))))
    return blobs, directories, PathInfoRootNodes(pathinfos)

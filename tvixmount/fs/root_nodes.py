"""The RootNodes seam: what the mount root contains.

The fs core knows nothing of Nix. It asks a RootNodes provider for a root
name and for the list of roots; the store layer plugs in through this seam.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

from ..castore.directory import Directory
from ..castore.nodes import Node
from ..errors import StorePathError
from ..pathinfo.service import PathInfoService
from ..storepath import StorePath

log = logging.getLogger(__name__)


class RootNodes(Protocol):
    async def lookup(self, name: bytes) -> Node | None:
        """The node named ``name`` in the root, or ``None`` when absent."""
        ...

    def list(self) -> AsyncIterator[Node]:
        """Every root node (each named as it appears in the root)."""
        ...


class PathInfoRootNodes:
    """Store path basenames -> the root nodes of their PathInfos."""

    def __init__(self, pathinfos: PathInfoService) -> None:
        self._pathinfos = pathinfos

    async def lookup(self, name: bytes) -> Node | None:
        try:
            store_path = StorePath.from_basename(name)
        except StorePathError:
            return None
        info = await self._pathinfos.get(store_path.digest)
        if info is None:
            return None
        if info.node.name != name:
            # A PathInfo is found by digest alone; serving it under a name it
            # does not carry would make two different paths share content.
            log.warning(
                "PathInfo for %s has root node named %r; treating it as absent",
                store_path,
                info.node.name,
            )
            return None
        return info.node

    async def list(self) -> AsyncIterator[Node]:
        async for info in self._pathinfos.list():
            yield info.node


class DirectoryRootNodes:
    """A single castore Directory as the mount root."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._children = {node.name: node for node in directory.entries()}

    async def lookup(self, name: bytes) -> Node | None:
        return self._children.get(name)

    async def list(self) -> AsyncIterator[Node]:
        for node in self._directory.entries():
            yield node

"""The store's root-nodes provider: store path basenames -> PathInfo root nodes.

This is where Nix meets the castore-only fs core (``fs/root_nodes.py`` defines
the seam): a root name is parsed as a store path basename and looked up under
the one identity rule (:func:`~tvixmount.pathinfo.lookup.find_path_info`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..castore.nodes import Node
from ..errors import StorePathError
from ..storepath import StorePath
from .lookup import find_path_info
from .service import PathInfoService


class PathInfoRootNodes:
    """Store path basenames -> the root nodes of their PathInfos."""

    def __init__(self, pathinfos: PathInfoService) -> None:
        self._pathinfos = pathinfos

    async def lookup(self, name: bytes) -> Node | None:
        try:
            store_path = StorePath.from_basename(name)
        except StorePathError:
            return None
        info = await find_path_info(self._pathinfos, store_path)
        return None if info is None else info.node

    async def list(self) -> AsyncIterator[Node]:
        async for info in self._pathinfos.list():
            yield info.node

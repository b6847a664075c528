"""The RootNodes seam: what the mount root contains.

The fs core knows nothing of Nix. It asks a RootNodes provider for a root
name and for the list of roots; the store layer plugs in through this seam
(``pathinfo/root_nodes.py``: store path basenames -> PathInfo root nodes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ..castore.directory import Directory
from ..castore.nodes import Node


class RootNodes(Protocol):
    async def lookup(self, name: bytes) -> Node | None:
        """The node named ``name`` in the root, or ``None`` when absent."""
        ...

    def list(self) -> AsyncIterator[Node]:
        """Every root node (each named as it appears in the root)."""
        ...


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

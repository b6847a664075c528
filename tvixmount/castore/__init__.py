"""castore: content-addressed blobs and directories (the tvix data model)."""

from .digest import EMPTY_DIGEST, B3Digest
from .directory import Directory
from .nodes import DirectoryNode, FileNode, Node, SymlinkNode, node_from_proto, node_to_proto

__all__ = [
    "EMPTY_DIGEST",
    "B3Digest",
    "Directory",
    "DirectoryNode",
    "FileNode",
    "Node",
    "SymlinkNode",
    "node_from_proto",
    "node_to_proto",
]

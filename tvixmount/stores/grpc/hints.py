"""What the Directories a gRPC store sent say about the blobs they name.

The castore protocol's Stat does not tell a blob's size, but every blob a
mount (or ``nar``) opens was named first by a FileNode that came through the
same store: its size bounds the blob stream (a server streaming forever, or
more than the node says, is cut off at once) and its place in the Directory
it came from tells which files come next (a walk, a build read them in turn).
"""

from __future__ import annotations

from collections import OrderedDict

from ...castore.digest import B3Digest
from ...castore.directory import Directory
from ...castore.nodes import FileNode

# Blobs remembered (about 200 bytes each, so at most about 50 MiB); the
# oldest are forgotten first, and a blob without a hint is only bounded by
# the chunk list or MAX_UNHINTED_BYTES.
MAX_HINTS = 1 << 18


class BlobHints:
    """blob digest -> (size its FileNode gave, the Directory naming it, its place there)."""

    def __init__(self, max_hints: int = MAX_HINTS) -> None:
        self._max = max_hints
        self._hints: OrderedDict[B3Digest, tuple[int, B3Digest | None, int]] = OrderedDict()
        self._siblings: OrderedDict[B3Digest, tuple[FileNode, ...]] = OrderedDict()

    def note_file(self, node: FileNode, parent: B3Digest | None = None, index: int = 0) -> None:
        self._hints[node.digest] = (node.size, parent, index)
        self._hints.move_to_end(node.digest)
        while len(self._hints) > self._max:
            self._hints.popitem(last=False)

    def note_directory(self, digest: B3Digest, directory: Directory) -> None:
        for index, node in enumerate(directory.files):
            self.note_file(node, digest, index)
        if directory.files:
            self._siblings[digest] = directory.files
            while len(self._siblings) > self._max // 16:
                self._siblings.popitem(last=False)

    def size_of(self, digest: B3Digest) -> int | None:
        hint = self._hints.get(digest)
        return None if hint is None else hint[0]

    def after(self, digest: B3Digest, count: int) -> tuple[FileNode, ...]:
        """Up to ``count`` files after ``digest``'s in the Directory that named it, if known."""
        hint = self._hints.get(digest)
        if hint is None or hint[1] is None:
            return ()
        index = hint[2]
        return self._siblings.get(hint[1], ())[index + 1 : index + 1 + count]


__all__ = ["MAX_HINTS", "BlobHints"]

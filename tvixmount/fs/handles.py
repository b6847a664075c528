"""Open file and directory handles.

A file handle owns at most one BlobReader for as long as the kernel keeps the
file open (none until a read reaches the daemon, for a re-opened file whose
blob was already checked); reads are positioned reads on it. A directory handle pins the listing
it serves so that a readdir resumed at an offset continues the same list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..castore.blobservice import BlobReader
from ..castore.nodes import Node
from .inodes import FileInode


@dataclass(slots=True)
class FileHandle:
    data: FileInode
    # Opened by the filesystem, checked to be ``data.size`` bytes long.
    reader: BlobReader | None = None

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        assert self.reader is not None, "read before the blob was opened"
        end = self.data.size
        if offset >= end:
            return b""
        return await self.reader.pread(offset, min(size, end - offset))


@dataclass(slots=True)
class DirectoryHandle:
    # The root's listing is collected on the first readdir; others are the
    # (immutable) entries of the directory inode.
    entries: tuple[Node, ...] | None = field(default=None)


H = TypeVar("H")


class HandleTable(Generic[H]):
    """Small-integer handles for the kernel (never reused while open)."""

    def __init__(self) -> None:
        self._open: dict[int, H] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._open)

    def add(self, handle: H) -> int:
        fh = self._next
        self._next += 1
        self._open[fh] = handle
        return fh

    def get(self, fh: int) -> H | None:
        return self._open.get(fh)

    def pop(self, fh: int) -> H | None:
        return self._open.pop(fh, None)

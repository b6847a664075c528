"""Open file and directory handles.

A file handle owns one BlobReader for as long as the kernel keeps the file
open; reads are positioned reads on it. A directory handle pins the listing
it serves so that a readdir resumed at an offset continues the same list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..castore.blobservice import BlobReader
from ..castore.digest import B3Digest
from ..castore.nodes import Node


@dataclass(slots=True)
class FileHandle:
    digest: B3Digest
    reader: BlobReader

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        if offset >= self.reader.size:
            return b""
        return await self.reader.pread(offset, min(size, self.reader.size - offset))

    async def aclose(self) -> None:
        await self.reader.aclose()


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

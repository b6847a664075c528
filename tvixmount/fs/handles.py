"""Open file and directory handles.

A file handle owns at most one BlobReader for as long as the kernel keeps the
file open (none until a read reaches the daemon, for a re-opened file whose
blob was already checked); reads are positioned reads on it. In FUSE's
no-open mode the kernel opens files without asking, and a file's handle is
kept by inode instead (:class:`FilesByInode`). A directory handle pins the
listing it serves so that a readdir resumed at an offset continues the same
list.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from ..castore.blobservice import BlobReader
from ..castore.nodes import Node
from .inodes import FileInode

if TYPE_CHECKING:
    import trio

    from .operations import Situation


@dataclass(slots=True)
class Opening:
    """A blob being opened for a handle: ``done`` is set once that is over,
    ``failed`` the situation other reads waiting for it answer with."""

    done: trio.Event
    failed: Situation | None = None


@dataclass(slots=True)
class FileHandle:
    data: FileInode
    # Opened by the filesystem, checked to be ``data.size`` bytes long.
    reader: BlobReader | None = None
    # While the reader is being opened, so that concurrent reads open it once.
    opening: Opening | None = None
    # Reads using the handle now (no-open mode: it is not closed under them).
    users: int = 0
    # No-open mode: the kernel forgot the inode while a read was using it.
    forgotten: bool = False

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


class FilesByInode:
    """File handles by inode, for FUSE's no-open mode (no OPEN, no RELEASE).

    The kernel then reads a file by its inode, never saying when it is done
    with it, so a handle (and its open blob) is kept between reads: the
    kernel sends a file's READs in a burst, and afterwards serves it from its
    page cache. At most ``limit`` files, of ``bytes_limit`` bytes in all, are
    kept (a remote store's reader may hold its blob in memory): past either,
    the least recently read that no read is using go back to the caller to be
    closed. The ``keep`` most recently read files always stay, however big,
    so big files read side by side do not close each other's blobs.
    """

    def __init__(self, limit: int, bytes_limit: int, keep: int) -> None:
        self._handles: OrderedDict[int, FileHandle] = OrderedDict()
        self._limit = limit
        self._bytes_limit = bytes_limit
        self._keep = keep
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._handles)

    def use(self, inode: int, data: FileInode) -> FileHandle:
        """The inode's handle, made if it has none, counted as in use until :meth:`done`."""
        handle = self._handles.get(inode)
        if handle is None:
            handle = self._handles[inode] = FileHandle(data)
            self._bytes += data.size
        else:
            self._handles.move_to_end(inode)
        handle.users += 1
        return handle

    def done(self, inode: int, handle: FileHandle) -> list[FileHandle]:
        """A read of ``handle`` is over; the handles to close now."""
        handle.users -= 1
        if handle.forgotten and not handle.users:
            return [self._pop(inode)]
        count, size = len(self._handles), self._bytes
        if count <= self._limit and size <= self._bytes_limit:
            return []
        idle: list[int] = []
        for inode_, kept in self._handles.items():  # least recently read first
            if (count <= self._limit and size <= self._bytes_limit) or count <= self._keep:
                break
            if kept.users == 0:
                idle.append(inode_)
                count -= 1
                size -= kept.data.size
        return [self._pop(inode_) for inode_ in idle]

    def forget(self, inode: int) -> FileHandle | None:
        """The kernel forgot ``inode``: its handle, to close now (or, if a read is
        using it, once that read is done)."""
        handle = self._handles.get(inode)
        if handle is None:
            return None
        if handle.users:
            handle.forgotten = True
            return None
        return self._pop(inode)

    def _pop(self, inode: int) -> FileHandle:
        handle = self._handles.pop(inode)
        self._bytes -= handle.data.size
        return handle

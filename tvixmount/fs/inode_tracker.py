"""Allocate, deduplicate and free inodes.

Identical content gets one inode: files by (blob digest, executable bit),
symlinks by target, directories by Directory digest. Each inode carries the
kernel's lookup count (one per successful lookup and per readdirplus entry
the kernel accepted); when ``forget`` brings it to zero the inode and its
dedup entry go away, so the next lookup of the same content allocates a fresh
inode. Inode numbers are never reused, so a stale number can never name other
content.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable

import pyfuse3

from ..castore.nodes import DirectoryNode, FileNode, Node, SymlinkNode
from ..libc import libc
from .inodes import DirectoryInode, FileInode, InodeData, RootInode, SymlinkInode

ROOT_INODE: int = pyfuse3.ROOT_INODE

# Compact the maps only after this many inodes were freed (and 3/4 of the peak).
_SHRINK_MIN = 10_000


def _data_of(node: Node) -> DirectoryInode | FileInode | SymlinkInode:
    if isinstance(node, DirectoryNode):
        return DirectoryInode(node.digest, node.size)
    if isinstance(node, FileNode):
        return FileInode(node.digest, node.size, node.executable)
    return SymlinkInode(node.target)


class InodeTracker:
    def __init__(self) -> None:
        self._data: dict[int, InodeData] = {ROOT_INODE: RootInode()}
        self._lookups: dict[int, int] = {}
        # Content -> inode, one map per kind so that the content itself (the
        # digest or target the inode data holds anyway) is the key: a
        # (kind, content) tuple key cost two more objects per inode (a million
        # file inodes: 609 MiB RSS with tuple keys, 488 without).
        self._files: dict[bytes, int] = {}
        self._executables: dict[bytes, int] = {}
        self._directories: dict[bytes, int] = {}
        self._symlinks: dict[bytes, int] = {}
        self._next = ROOT_INODE + 1
        self._peak = 1

    def __len__(self) -> int:
        """Live inodes, the root included."""
        return len(self._data)

    def get(self, inode: int) -> InodeData | None:
        return self._data.get(inode)

    def lookup_count(self, inode: int) -> int:
        return self._lookups.get(inode, 0)

    def remember(self, node: Node) -> tuple[int, InodeData]:
        """The inode for ``node``'s content, with the kernel's lookup count raised by one.

        Call this only when the inode is handed to the kernel (a lookup reply or
        an accepted readdirplus entry); undo with :meth:`forget` otherwise.
        """
        # Looking up the key first: an already known inode (the common case on
        # readdirplus and repeated lookups) costs no new inode data.
        by_content, key = self._by_content(node)
        inode = by_content.get(key)
        if inode is None:
            inode = self._next
            self._next += 1
            self._data[inode] = _data_of(node)
            by_content[key] = inode
            self._peak = max(self._peak, len(self._data))
        self._lookups[inode] = self._lookups.get(inode, 0) + 1
        return inode, self._data[inode]

    def forget(self, inode: int, count: int) -> bool:
        """Drop ``count`` kernel references; free the inode when none remain.

        Returns whether the inode was freed (just now).
        """
        if inode == ROOT_INODE:
            return False
        remaining = self._lookups.get(inode, 0) - count
        if remaining > 0:
            self._lookups[inode] = remaining
            return False
        self._lookups.pop(inode, None)
        data = self._data.pop(inode, None)
        if isinstance(data, DirectoryInode | FileInode | SymlinkInode):
            by_content, key = self._by_content(data)
            if by_content.get(key) == inode:
                del by_content[key]
        return data is not None

    def _by_content(
        self, content: Node | DirectoryInode | FileInode | SymlinkInode
    ) -> tuple[dict[bytes, int], bytes]:
        """The content map for ``content``'s kind, and its key there.

        A node and the inode data made from it have the same key.
        """
        if isinstance(content, FileNode | FileInode):
            return (self._executables if content.executable else self._files), content.digest
        if isinstance(content, SymlinkNode | SymlinkInode):
            return self._symlinks, content.target
        return self._directories, content.digest

    def forget_many(self, counts: Iterable[tuple[int, int]]) -> list[int]:
        """:meth:`forget` each; returns the inodes freed."""
        freed = [inode for inode, count in counts if self.forget(inode, count)]
        self._shrink_if_mostly_forgotten()
        return freed

    def _shrink_if_mostly_forgotten(self) -> None:
        """Give memory back once the kernel has forgotten most of what it held.

        Python dicts never shrink when entries are deleted, so after the kernel
        drops a million inodes the maps would keep their peak-sized
        tables for ever. Copying them compacts the tables, and ``malloc_trim``
        returns the freed heap to the system, so RSS follows what the kernel
        holds rather than the peak.
        """
        live = len(self._data)
        if self._peak - live < _SHRINK_MIN or live * 4 > self._peak:
            return
        self._data = dict(self._data)
        self._lookups = dict(self._lookups)
        self._files = dict(self._files)
        self._executables = dict(self._executables)
        self._directories = dict(self._directories)
        self._symlinks = dict(self._symlinks)
        self._peak = live
        # A full collection also empties the interpreter's free lists (tuples,
        # dicts, ...), which the mass forget just filled with blocks scattered
        # over the allocator's arenas; each would pin a whole arena.
        gc.collect()
        _malloc_trim()


def _malloc_trim() -> None:
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)

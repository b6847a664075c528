"""Inode data: what the filesystem knows about one inode, and its attributes.

Every inode is one of four kinds. Files, symlinks and directories are pure
content (a blob digest, a target, a Directory digest), so two inodes with the
same content are interchangeable; the root is the only inode with identity.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field

import pyfuse3

from ..castore.digest import B3Digest
from ..castore.directory import Directory
from ..castore.nodes import Node

# Nix sets every store path's times to 1 (seconds after the epoch), and builds
# that read timestamps (tar, make) must see what a real /nix/store shows.
NIX_TIME_NS = 1_000_000_000

# The content behind an inode never changes, so the kernel may keep names and
# attributes for as long as it likes (a year; effectively forever).
CACHE_TIMEOUT = 365 * 24 * 3600.0


@dataclass(slots=True)
class RootInode:
    """The mount root: its children come from a RootNodes provider."""


@dataclass(frozen=True, slots=True)
class Listing:
    """A fetched Directory: its children merged and sorted by name, and by name."""

    entries: tuple[Node, ...]
    by_name: dict[bytes, Node]

    @classmethod
    def of(cls, directory: Directory) -> Listing:
        return cls.of_entries(tuple(directory.entries()))

    @classmethod
    def of_entries(cls, entries: tuple[Node, ...]) -> Listing:
        """A listing of ``entries``, already sorted by name."""
        return cls(entries, {node.name: node for node in entries})


@dataclass(slots=True)
class DirectoryInode:
    digest: B3Digest
    size: int
    # Fetched on the first lookup/readdir below this inode (sparse population).
    listing: Listing | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class FileInode:
    digest: B3Digest
    size: int
    executable: bool


@dataclass(frozen=True, slots=True)
class SymlinkInode:
    target: bytes


InodeData = RootInode | DirectoryInode | FileInode | SymlinkInode


def _mode_and_size(data: InodeData) -> tuple[int, int]:
    if isinstance(data, RootInode):
        return stat.S_IFDIR | 0o555, 0
    if isinstance(data, DirectoryInode):
        return stat.S_IFDIR | 0o555, data.size
    if isinstance(data, FileInode):
        return stat.S_IFREG | (0o555 if data.executable else 0o444), data.size
    return stat.S_IFLNK | 0o444, len(data.target)


def entry_attributes(inode: int, data: InodeData) -> pyfuse3.EntryAttributes:
    """Attributes as Nix's store has them: fixed modes, owner root, all times 1 s.

    A fresh EntryAttributes is already zeroed with one link and a 4096-byte
    block size, so only what differs is set: this runs for every lookup,
    getattr and readdirplus entry.
    """
    attrs = pyfuse3.EntryAttributes()
    mode, size = _mode_and_size(data)
    attrs.st_ino = inode
    attrs.entry_timeout = CACHE_TIMEOUT
    attrs.attr_timeout = CACHE_TIMEOUT
    attrs.st_mode = mode
    attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = NIX_TIME_NS
    if size:
        attrs.st_size = size
        if isinstance(data, FileInode):
            attrs.st_blocks = (size + 511) // 512
    return attrs


def negative_entry() -> pyfuse3.EntryAttributes:
    """A lookup answer meaning "no such name", which the kernel caches (inode 0)."""
    attrs = pyfuse3.EntryAttributes()
    attrs.st_ino = 0
    attrs.entry_timeout = CACHE_TIMEOUT
    return attrs

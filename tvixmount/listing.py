"""Listings of store paths and their contents, read through the store's services.

This is what ``tvixmount ls`` shows: the same lookups as the mount (store
path validation, PathInfo by digest, root node name check, Directory objects
by digest), without FUSE. A listing is a tree of :class:`Entry` values cut
off at a depth; :func:`to_nix_json` renders it in the shape of Nix 2.8's
``nix store ls --json``.

NAR offsets (``narOffset`` in Nix's JSON) are computed from the NAR grammar
instead of by serialising the NAR: every token is a length-prefixed string
padded to 8 bytes, so the size of any subtree's NAR follows from its names,
file sizes and symlink targets alone. Offsets are relative to the start of
the store path's whole NAR, as Nix reports them for subpaths too.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator
from dataclasses import dataclass

from .castore.digest import B3Digest
from .castore.directory import Directory
from .castore.nodes import DirectoryNode, FileNode, Node, SymlinkNode
from .errors import NotFoundError, StoreError
from .nar import wire
from .pathinfo.model import PathInfo
from .pathinfo.root_nodes import PathInfoRootNodes
from .storepath import STORE_DIR, StorePath
from .stores import Store


class EntryType(enum.StrEnum):
    """Nix's names for the three kinds of file system object."""

    DIRECTORY = "directory"
    REGULAR = "regular"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class Entry:
    """One node of a listing.

    ``size`` is the file size for regular files, the castore directory size
    (entries below it, the tvix rule) for directories and 0 for symlinks.
    ``children`` is ``None`` for anything not expanded: non-directories and
    directories at the depth limit. ``nar_offset`` (regular files only) is
    the offset of the file's contents in the store path's NAR, when asked for.
    """

    name: bytes
    type: EntryType
    size: int = 0
    executable: bool = False
    target: bytes | None = None
    digest: B3Digest | None = None
    nar_offset: int | None = None
    children: tuple[Entry, ...] | None = None

    def walk(self, prefix: tuple[bytes, ...] = ()) -> Iterator[tuple[tuple[bytes, ...], Entry]]:
        """Every entry below this one, depth first in name order, with its relative path."""
        for child in self.children or ():
            path = (*prefix, child.name)
            yield path, child
            yield from child.walk(path)


@dataclass(frozen=True, slots=True)
class Summary:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    total_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Listing:
    """The listing of ``STORE_PATH[/SUBPATH]``; ``depth`` is ``None`` when unlimited."""

    store_path: StorePath
    subpath: tuple[bytes, ...]
    root: Entry
    depth: int | None

    @property
    def path(self) -> str:
        """The listed path as an absolute path text."""
        return path_text(self.store_path, self.subpath)

    def summary(self) -> Summary:
        """Counts of what is listed: a directory's entries, or the single listed object."""
        if self.root.type is EntryType.DIRECTORY:
            return summarize(entry for _, entry in self.root.walk())
        return summarize([self.root])


@dataclass(frozen=True, slots=True)
class StoreEntry:
    """One store path of a store-wide listing; ``name`` is the basename."""

    name: str
    type: EntryType
    nar_size: int
    executable: bool = False
    digest: B3Digest | None = None
    target: bytes | None = None

    @property
    def absolute(self) -> str:
        return f"{STORE_DIR}/{self.name}"


def summarize(entries: Iterator[Entry] | list[Entry]) -> Summary:
    files = directories = symlinks = total = 0
    for entry in entries:
        if entry.type is EntryType.DIRECTORY:
            directories += 1
        elif entry.type is EntryType.SYMLINK:
            symlinks += 1
        else:
            files += 1
            total += entry.size
    return Summary(files, directories, symlinks, total)


def summarize_store(entries: list[StoreEntry]) -> Summary:
    """Root node kinds counted, and the total NAR size."""
    counts = {kind: 0 for kind in EntryType}
    for entry in entries:
        counts[entry.type] += 1
    return Summary(
        files=counts[EntryType.REGULAR],
        directories=counts[EntryType.DIRECTORY],
        symlinks=counts[EntryType.SYMLINK],
        total_bytes=sum(e.nar_size for e in entries),
    )


def display_name(name: bytes) -> str:
    """Names are raw bytes; undecodable bytes show as escapes rather than failing output."""
    return name.decode("utf-8", "backslashreplace")


def path_text(store_path: StorePath, subpath: tuple[bytes, ...]) -> str:
    """``/nix/store/<basename>/<subpath>`` for messages and headings."""
    return "/".join([store_path.absolute, *(display_name(p) for p in subpath)])


# --- NAR layout -------------------------------------------------------------------------


def _string(n: int) -> int:
    """A NAR string of ``n`` bytes: 8-byte length, the bytes, zero padding to 8."""
    return 8 + n + wire.padding(n)


_MAGIC = len(wire.HEADER)
_CLOSE = len(wire.CLOSE)
_DIRECTORY_HEAD = len(wire.DIRECTORY_PREFIX)
_SYMLINK_HEAD = len(wire.SYMLINK_PREFIX)
_U64 = 8  # the contents length between a file's tokens and its bytes


def _contents_offset(node: FileNode) -> int:
    """Where a file's data starts, relative to the start of its node."""
    prefix = wire.EXECUTABLE_PREFIX if node.executable else wire.REGULAR_PREFIX
    return len(prefix) + _U64


def _file_nar_size(node: FileNode) -> int:
    return _contents_offset(node) + node.size + wire.padding(node.size) + _CLOSE


def _symlink_nar_size(node: SymlinkNode) -> int:
    return _SYMLINK_HEAD + _string(len(node.target)) + _CLOSE


def _child_node_offset(name: bytes) -> int:
    """From the start of a directory entry to the start of its node."""
    return len(wire.ENTRY_PREFIX) + _string(len(name)) + len(wire.ENTRY_NODE)


# --- the walk ---------------------------------------------------------------------------


class _Walker:
    """Fetches Directory objects once per digest and computes NAR sizes, memoised.

    Identical subtrees share a digest, so both caches are keyed by it.
    """

    def __init__(self, store: Store, store_path: StorePath) -> None:
        self._store = store
        self._store_path = store_path
        self._directories: dict[B3Digest, Directory] = {}
        self._nar_sizes: dict[B3Digest, int] = {}

    async def prefetch(self, root: B3Digest) -> None:
        """Load a whole tree in one request (one round trip on a remote store)."""
        try:
            async for directory in self._store.directories.get_recursive(root):
                self._directories[directory.digest()] = directory
        except NotFoundError:
            # The per-directory walk reports the missing one with its path.
            pass

    async def directory(self, node: DirectoryNode, path: tuple[bytes, ...]) -> Directory:
        found = self._directories.get(node.digest)
        if found is None:
            found = await self._store.directories.get(node.digest)
            if found is None:
                where = path_text(self._store_path, path)
                raise StoreError(
                    f"directory {node.digest} of {where} is missing from the store "
                    "(incomplete or corrupt store)"
                )
            self._directories[node.digest] = found
        return found

    async def nar_size(self, node: Node, path: tuple[bytes, ...]) -> int:
        """Size of the node's NAR serialisation (without the archive magic)."""
        if isinstance(node, FileNode):
            return _file_nar_size(node)
        if isinstance(node, SymlinkNode):
            return _symlink_nar_size(node)
        cached = self._nar_sizes.get(node.digest)
        if cached is not None:
            return cached
        directory = await self.directory(node, path)
        size = _DIRECTORY_HEAD + _CLOSE
        for child in directory.entries():
            size += await self._entry_nar_size(child, path)
        self._nar_sizes[node.digest] = size
        return size

    async def _entry_nar_size(self, child: Node, parent: tuple[bytes, ...]) -> int:
        """A directory entry's NAR size: its framing plus its node."""
        return (
            _child_node_offset(child.name)
            + await self.nar_size(child, (*parent, child.name))
            + len(wire.ENTRY_CLOSE)
        )

    async def find_child(
        self, directory: Directory, name: bytes, path: tuple[bytes, ...], node_offset: int | None
    ) -> tuple[Node, int | None] | None:
        """Child ``name`` and the NAR offset of its node; sizes only the siblings before it."""
        offset = None if node_offset is None else node_offset + _DIRECTORY_HEAD
        for child in directory.entries():
            if child.name == name:
                return child, None if offset is None else offset + _child_node_offset(name)
            if offset is not None:
                offset += await self._entry_nar_size(child, path)
        return None

    async def children_with_offsets(
        self, node: DirectoryNode, path: tuple[bytes, ...], node_offset: int | None
    ) -> list[tuple[Node, int | None]]:
        """The directory's children, each with the NAR offset of its node when tracked."""
        directory = await self.directory(node, path)
        if node_offset is None:
            return [(child, None) for child in directory.entries()]
        result: list[tuple[Node, int | None]] = []
        offset = node_offset + _DIRECTORY_HEAD
        for child in directory.entries():
            result.append((child, offset + _child_node_offset(child.name)))
            offset += await self._entry_nar_size(child, path)
        return result

    async def entry(
        self,
        node: Node,
        name: bytes,
        path: tuple[bytes, ...],
        depth: int | None,
        node_offset: int | None,
    ) -> Entry:
        """Describe ``node``; expand directories while ``depth`` (levels left) allows."""
        if isinstance(node, FileNode):
            return Entry(
                name,
                EntryType.REGULAR,
                size=node.size,
                executable=node.executable,
                digest=node.digest,
                nar_offset=None if node_offset is None else node_offset + _contents_offset(node),
            )
        if isinstance(node, SymlinkNode):
            return Entry(name, EntryType.SYMLINK, target=node.target)
        children = None
        if depth is None or depth > 0:
            below = None if depth is None else depth - 1
            children = tuple(
                [
                    await self.entry(child, child.name, (*path, child.name), below, offset)
                    for child, offset in await self.children_with_offsets(node, path, node_offset)
                ]
            )
        return Entry(
            name, EntryType.DIRECTORY, size=node.size, digest=node.digest, children=children
        )


async def list_path(
    store: Store,
    text: str,
    *,
    depth: int | None = 1,
    nar_offsets: bool = False,
) -> Listing:
    """List ``STORE_PATH[/SUBPATH]``.

    ``depth`` is how many levels of entries below the listed directory to
    describe (1: its entries, ``None``: everything); directories at the
    limit are described but not expanded. Symlinks inside the path are not
    followed, as in Nix's NAR listings. ``nar_offsets`` adds the NAR offset
    of every regular file (it reads the Directory objects of siblings that
    come before, to size them).

    Raises :class:`~tvixmount.errors.StorePathError` for a malformed path,
    :class:`~tvixmount.errors.NotFoundError` for an unknown store path or
    subpath, and :class:`~tvixmount.errors.StoreError` when a Directory
    object the path refers to is missing.
    """
    if depth is not None and depth < 1:
        raise ValueError("depth must be at least 1 (or None for no limit)")
    store_path, parts = StorePath.parse_with_subpath(text)
    subpath = tuple(os.fsencode(p) for p in parts)
    # The mount's own root lookup: same name checks, same answer for a mismatch.
    node = await PathInfoRootNodes(store.pathinfos).lookup(str(store_path).encode())
    if node is None:
        raise NotFoundError(f"path '{store_path.absolute}' is not in the store {store.url}")
    walker = _Walker(store, store_path)
    if depth is None and isinstance(node, DirectoryNode):
        await walker.prefetch(node.digest)

    name = bytes(node.name)
    offset = _MAGIC if nar_offsets else None
    for i, part in enumerate(subpath):
        here = subpath[:i]
        if not isinstance(node, DirectoryNode):
            kind = "symlink" if isinstance(node, SymlinkNode) else "regular file"
            where = path_text(store_path, here)
            raise NotFoundError(f"path '{where}' is a {kind}, not a directory")
        directory = await walker.directory(node, here)
        found = await walker.find_child(directory, part, here, offset)
        if found is None:
            missing = path_text(store_path, subpath[: i + 1])
            raise NotFoundError(f"path '{missing}' does not exist")
        (node, offset), name = found, part

    root = await walker.entry(node, name, subpath, depth, offset)
    return Listing(store_path, subpath, root, depth)


def _store_entry(info: PathInfo) -> StoreEntry:
    node = info.node
    # The service validated the PathInfo, root name included: no second parse.
    name = node.name.decode("ascii")
    nar_size = info.narinfo.nar_size
    if isinstance(node, DirectoryNode):
        return StoreEntry(name, EntryType.DIRECTORY, nar_size, digest=node.digest)
    if isinstance(node, FileNode):
        return StoreEntry(
            name, EntryType.REGULAR, nar_size, executable=node.executable, digest=node.digest
        )
    return StoreEntry(name, EntryType.SYMLINK, nar_size, target=node.target)


async def list_store(store: Store) -> list[StoreEntry]:
    """Every store path in the store, sorted by name (Nix's store path order)."""
    entries = [_store_entry(info) async for info in store.pathinfos.list()]
    entries.sort(key=lambda e: e.name)
    return entries


# --- Nix's JSON -------------------------------------------------------------------------


def to_nix_json(listing: Listing) -> dict[str, object]:
    """The listing as Nix 2.8's ``nix store ls --json`` prints it.

    Nix describes the listed object; in a non-recursive listing a
    directory's entries are empty objects. A depth limit generalises that:
    entries at the limit are empty objects, everything above it is described.
    """
    return _json(listing.root, listing.depth)


def _json(entry: Entry, depth: int | None) -> dict[str, object]:
    if entry.type is EntryType.REGULAR:
        out: dict[str, object] = {"type": "regular", "size": entry.size}
        if entry.executable:
            out["executable"] = True
        if entry.nar_offset is not None:
            out["narOffset"] = entry.nar_offset
        return out
    if entry.type is EntryType.SYMLINK:
        return {"type": "symlink", "target": display_name(entry.target or b"")}
    below = None if depth is None else depth - 1
    entries: dict[str, object] = {}
    for child in entry.children or ():
        described = below is None or below > 0
        entries[display_name(child.name)] = _json(child, below) if described else {}
    return {"type": "directory", "entries": entries}


def store_to_json(entries: list[StoreEntry]) -> list[dict[str, object]]:
    """The store-wide listing, shaped like ``nix path-info --json`` (a list with ``path``)."""
    out: list[dict[str, object]] = []
    for entry in entries:
        item: dict[str, object] = {
            "path": entry.absolute,
            "type": entry.type.value,
            "narSize": entry.nar_size,
        }
        if entry.executable:
            item["executable"] = True
        if entry.digest is not None:
            item["digest"] = str(entry.digest)
        if entry.target is not None:
            item["target"] = display_name(entry.target)
        out.append(item)
    return out

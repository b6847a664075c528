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

Nothing here recurses: trees as deep as the NAR reader and the mount accept
(100,000 levels and more) are walked with explicit stacks, and paths inside
the walk are linked names (:class:`Where`), not a tuple per level.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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

    def walk_levels(self) -> Iterator[tuple[int, bool, Entry]]:
        """Every entry below this one, depth first in name order.

        Each comes with its level (1: this entry's children) and whether it
        is the last of its siblings.
        """
        stack = [iter(_with_last(self.children or ()))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                continue
            last, child = step
            yield len(stack), last, child
            if child.children:
                stack.append(iter(_with_last(child.children)))

    def walk(self) -> Iterator[tuple[tuple[bytes, ...], Entry]]:
        """Every entry below this one, depth first in name order, with its relative path."""
        names: list[bytes] = []
        for level, _, entry in self.walk_levels():
            del names[level - 1 :]
            names.append(entry.name)
            yield tuple(names), entry


def _with_last(children: tuple[Entry, ...]) -> Iterator[tuple[bool, Entry]]:
    end = len(children) - 1
    return ((i == end, child) for i, child in enumerate(children))


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
            return summarize(entry for _, _, entry in self.root.walk_levels())
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


@dataclass(frozen=True, slots=True)
class Where:
    """A path below the store path as linked names: O(1) to extend, spelled out on demand."""

    parent: Where | None
    name: bytes

    def parts(self) -> tuple[bytes, ...]:
        names = []
        where: Where | None = self
        while where is not None:
            names.append(where.name)
            where = where.parent
        return tuple(reversed(names))


def _parts(where: Where | None) -> tuple[bytes, ...]:
    return () if where is None else where.parts()


def _entry_nar_size(name: bytes, node_nar_size: int) -> int:
    """A directory entry's NAR size: its framing plus its node."""
    return _child_node_offset(name) + node_nar_size + len(wire.ENTRY_CLOSE)


@dataclass(slots=True)
class _SizeFrame:
    """A directory whose NAR size is being summed, in :meth:`_Walker.nar_size`."""

    node: DirectoryNode
    where: Where | None
    children: Iterator[Node]
    size: int = _DIRECTORY_HEAD + _CLOSE


@dataclass(slots=True)
class _EntryFrame:
    """A directory being described, in :meth:`_Walker.entry`."""

    name: bytes
    node: DirectoryNode
    where: Where | None
    depth: int | None
    children: Iterator[tuple[Node, int | None]]
    done: list[Entry] = field(default_factory=list)


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

    async def directory(self, node: DirectoryNode, where: Where | None) -> Directory:
        found = self._directories.get(node.digest)
        if found is None:
            found = await self._store.directories.get(node.digest)
            if found is None:
                place = path_text(self._store_path, _parts(where))
                raise StoreError(
                    f"directory {node.digest} of {place} is missing from the store "
                    "(incomplete or corrupt store)"
                )
            self._directories[node.digest] = found
        return found

    async def nar_size(self, node: Node, where: Where | None) -> int:
        """Size of the node's NAR serialisation (without the archive magic)."""
        if isinstance(node, FileNode):
            return _file_nar_size(node)
        if isinstance(node, SymlinkNode):
            return _symlink_nar_size(node)
        cached = self._nar_sizes.get(node.digest)
        if cached is not None:
            return cached
        directory = await self.directory(node, where)
        stack = [_SizeFrame(node, where, iter(directory.entries()))]
        while stack:
            frame = stack[-1]
            child = next(frame.children, None)
            if child is None:
                stack.pop()
                self._nar_sizes[frame.node.digest] = frame.size
                if stack:
                    stack[-1].size += _entry_nar_size(frame.node.name, frame.size)
                continue
            if isinstance(child, DirectoryNode) and child.digest not in self._nar_sizes:
                below = Where(frame.where, child.name)
                entries = (await self.directory(child, below)).entries()
                stack.append(_SizeFrame(child, below, iter(entries)))
            else:
                frame.size += _entry_nar_size(child.name, await self.nar_size(child, None))
        return self._nar_sizes[node.digest]

    async def find_child(
        self, directory: Directory, name: bytes, where: Where | None, node_offset: int | None
    ) -> tuple[Node, int | None] | None:
        """Child ``name`` and the NAR offset of its node; sizes only the siblings before it."""
        offset = None if node_offset is None else node_offset + _DIRECTORY_HEAD
        for child in directory.entries():
            if child.name == name:
                return child, None if offset is None else offset + _child_node_offset(name)
            if offset is not None:
                size = await self.nar_size(child, Where(where, child.name))
                offset += _entry_nar_size(child.name, size)
        return None

    async def children_with_offsets(
        self, node: DirectoryNode, where: Where | None, node_offset: int | None
    ) -> list[tuple[Node, int | None]]:
        """The directory's children, each with the NAR offset of its node when tracked."""
        directory = await self.directory(node, where)
        if node_offset is None:
            return [(child, None) for child in directory.entries()]
        result: list[tuple[Node, int | None]] = []
        offset = node_offset + _DIRECTORY_HEAD
        for child in directory.entries():
            result.append((child, offset + _child_node_offset(child.name)))
            size = await self.nar_size(child, Where(where, child.name))
            offset += _entry_nar_size(child.name, size)
        return result

    async def entry(
        self,
        node: Node,
        name: bytes,
        where: Where | None,
        depth: int | None,
        node_offset: int | None,
    ) -> Entry:
        """Describe ``node``; expand directories while ``depth`` (levels left) allows."""
        if not isinstance(node, DirectoryNode) or depth == 0:
            return _leaf_entry(node, name, node_offset)
        children = await self.children_with_offsets(node, where, node_offset)
        stack = [_EntryFrame(name, node, where, depth, iter(children))]
        while True:
            frame = stack[-1]
            step = next(frame.children, None)
            if step is not None:
                child, offset = step
                below = None if frame.depth is None else frame.depth - 1
                if isinstance(child, DirectoryNode) and below != 0:
                    place = Where(frame.where, child.name)
                    grandchildren = await self.children_with_offsets(child, place, offset)
                    stack.append(_EntryFrame(child.name, child, place, below, iter(grandchildren)))
                else:
                    frame.done.append(_leaf_entry(child, child.name, offset))
                continue
            stack.pop()
            described = Entry(
                frame.name,
                EntryType.DIRECTORY,
                size=frame.node.size,
                digest=frame.node.digest,
                children=tuple(frame.done),
            )
            if not stack:
                return described
            stack[-1].done.append(described)


def _leaf_entry(node: Node, name: bytes, node_offset: int | None) -> Entry:
    """A file, a symlink, or a directory described without its children."""
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
    return Entry(name, EntryType.DIRECTORY, size=node.size, digest=node.digest)


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
    here: Where | None = None
    for part in subpath:
        if not isinstance(node, DirectoryNode):
            kind = "symlink" if isinstance(node, SymlinkNode) else "regular file"
            place = path_text(store_path, _parts(here))
            raise NotFoundError(f"path '{place}' is a {kind}, not a directory")
        directory = await walker.directory(node, here)
        found = await walker.find_child(directory, part, here, offset)
        here = Where(here, part)
        if found is None:
            raise NotFoundError(f"path '{path_text(store_path, here.parts())}' does not exist")
        (node, offset), name = found, part

    root = await walker.entry(node, name, here, depth, offset)
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
    root = _json_of(listing.root)
    stack = [(listing.root, root, listing.depth)]
    while stack:
        entry, out, depth = stack.pop()
        if entry.children is None:
            continue
        below = None if depth is None else depth - 1
        entries: dict[str, object] = {}
        out["entries"] = entries
        for child in entry.children:
            if below is None or below > 0:
                described = entries[display_name(child.name)] = _json_of(child)
                stack.append((child, described, below))
            else:
                entries[display_name(child.name)] = {}
    return root


def _json_of(entry: Entry) -> dict[str, object]:
    """One entry's own fields; a directory's ``entries`` are filled in by the walk."""
    if entry.type is EntryType.REGULAR:
        out: dict[str, object] = {"type": "regular", "size": entry.size}
        if entry.executable:
            out["executable"] = True
        if entry.nar_offset is not None:
            out["narOffset"] = entry.nar_offset
        return out
    if entry.type is EntryType.SYMLINK:
        return {"type": "symlink", "target": display_name(entry.target or b"")}
    return {"type": "directory", "entries": {}}


_SCALAR = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
_KEY = json.encoder.encode_basestring  # keys are str, as in JSON
_END = object()


@dataclass(slots=True)
class _JsonFrame:
    items: Iterator[Any]
    closer: str
    is_object: bool
    started: bool = False


def _is_flat(value: dict[Any, Any] | list[Any]) -> bool:
    """A container with no container inside: the C encoder takes it in one call."""
    for inner in value.values() if isinstance(value, dict) else value:
        if isinstance(inner, dict | list):
            return False
    return True


def json_chunks(value: object) -> Iterator[str]:
    """Compact JSON text, ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``.

    Without recursion: ``json.dumps`` gives up on nesting deeper than about
    a thousand levels, and a Nix listing nests two per directory level.
    """
    frames: list[_JsonFrame] = []
    item = value
    while True:
        if isinstance(item, dict | list) and item and not _is_flat(item):
            if isinstance(item, dict):
                frames.append(_JsonFrame(iter(item.items()), "}", True))
                yield "{"
            else:
                frames.append(_JsonFrame(iter(item), "]", False))
                yield "["
        else:
            yield _SCALAR.encode(item)
        while frames:
            frame = frames[-1]
            step: Any = next(frame.items, _END)
            if step is _END:
                frames.pop()
                yield frame.closer
                continue
            separator = "," if frame.started else ""
            frame.started = True
            if frame.is_object:
                key, item = step
                yield f"{separator}{_KEY(key)}:"
            else:
                item = step
                yield separator
            break
        else:
            return


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

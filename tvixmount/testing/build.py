"""Build a fixture spec into a store, and optionally into a Nix binary cache.

Paths are built dependencies first, so every placeholder can be replaced by
the finished store path it names. A path's store path is what Nix gives a
``fixed:r:sha256`` source with references (the NAR hash of its contents and
its sorted references); pinned paths keep the basename the spec gives and
claim no content address, since their name is not derived from their bytes.
PathInfos are put only once every path has been built, so an error halfway
leaves no path visible (content-addressed blobs and directories may remain;
they are harmless and shared).
"""

from __future__ import annotations

import hashlib
import lzma
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import nixbase32
from ..castore.blobservice import put_stream
from ..castore.digest import B3Digest
from ..castore.directory import Directory
from ..castore.nodes import DirectoryNode, FileNode, Node, SymlinkNode, rename
from ..errors import StoreError
from ..nar.narinfo import Narinfo, NixHash
from ..nar.writer import calculate_nar, write_nar
from ..pathinfo.model import CAHash, ContentAddress, NarInfo, PathInfo
from ..storepath import StorePath, from_nar_hash
from ..stores import Store, StoreOptions, open_store
from .spec import (
    Content,
    DirectoryEntry,
    Entry,
    FileEntry,
    FixtureSpec,
    PathSpec,
    Resolver,
    Text,
    render,
)

COMPRESSIONS = ("none", "xz")
_NAR_SUFFIX = {"none": ".nar", "xz": ".nar.xz"}


@dataclass(frozen=True, slots=True)
class BuiltPath:
    spec: PathSpec
    path_info: PathInfo

    @property
    def store_path(self) -> StorePath:
        return self.path_info.store_path


@dataclass(frozen=True, slots=True)
class BuiltFixture:
    """The built paths, dependencies first (the spec's build order)."""

    paths: tuple[BuiltPath, ...]

    def __getitem__(self, path_id: str) -> StorePath:
        """The store path of the spec path with this id."""
        for built in self.paths:
            if built.spec.id == path_id:
                return built.store_path
        raise KeyError(path_id)

    def absolute(self, path_id: str) -> str:
        return self[path_id].absolute


class _Builder:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._blobs: dict[object, tuple[B3Digest, int]] = {}  # content key -> (digest, size)

    async def build_path(self, path: PathSpec, resolve: Resolver) -> Node:
        """Put the path's blobs and directories; returns its root node (not yet named)."""
        pending: list[Directory] = []  # leaves first, as put_many wants
        node = await self._put(path.root, b"root", resolve, pending)
        if pending:
            await self._store.directories.put_many(pending)
        return node

    async def _put(
        self, entry: Entry, name: bytes, resolve: Resolver, pending: list[Directory]
    ) -> Node:
        if isinstance(entry, DirectoryEntry):
            children = [await self._put(child, n, resolve, pending) for n, child in entry.children]
            directory = Directory.from_nodes(children)
            pending.append(directory)
            return DirectoryNode(name, directory.digest(), directory.size())
        if isinstance(entry, FileEntry):
            digest, size = await self._put_blob(entry.content, resolve)
            return FileNode(name, digest, size, entry.executable)
        return SymlinkNode(name, render(entry.target, resolve).encode())

    async def _put_blob(self, content: Content, resolve: Resolver) -> tuple[B3Digest, int]:
        # Text differs per resolved placeholders; other contents are their own key.
        key: object = render(content.template, resolve) if isinstance(content, Text) else content
        known = self._blobs.get(key)
        if known is not None:
            return known
        size = 0

        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                size += len(chunk)
                yield chunk

        digest = await put_stream(self._store.blobs, counted(content.chunks(resolve)))
        self._blobs[key] = (digest, size)
        return digest, size


async def build_fixture(spec: FixtureSpec, store: Store) -> BuiltFixture:
    """Put every path of ``spec`` into ``store``; returns the store paths by id."""
    builder = _Builder(store)
    done: dict[str, StorePath] = {}
    built: list[BuiltPath] = []
    for path in spec.paths:
        node = await builder.build_path(path, lambda path_id: done[path_id].absolute)
        nar_size, nar_sha256 = await calculate_nar(node, store.blobs, store.directories)
        references = sorted(done[ref] for ref in path.references)
        ca = None
        store_path = path.pinned
        if store_path is None:
            store_path = from_nar_hash(nar_sha256, path.name, references)
            ca = ContentAddress(CAHash.NAR_SHA256, nar_sha256)
        info = PathInfo(
            node=rename(node, str(store_path).encode()),
            references=tuple(ref.digest for ref in references),
            narinfo=NarInfo(
                nar_size=nar_size,
                nar_sha256=nar_sha256,
                reference_names=tuple(str(ref) for ref in references),
                ca=ca,
            ),
        )
        info.validate()
        done[path.id] = store_path
        built.append(BuiltPath(path, info))
    for item in built:
        await store.pathinfos.put(item.path_info)
    return BuiltFixture(tuple(built))


async def write_nix_cache(
    fixture: BuiltFixture, store: Store, directory: Path, compression: str = "xz"
) -> None:
    """Write ``fixture`` (already built into ``store``) as a Nix binary cache in ``directory``.

    The layout is what ``nix copy --to file://DIR`` writes: ``nix-cache-info``,
    ``<hash>.narinfo`` and ``nar/<file hash>.nar[.xz]``. Paths are unsigned;
    unpinned ones carry their content address, which Nix accepts without a
    signature.
    """
    if compression not in COMPRESSIONS:
        raise StoreError(f"unknown compression {compression!r} (known: {', '.join(COMPRESSIONS)})")
    nar_dir = directory / "nar"
    try:
        nar_dir.mkdir(parents=True, exist_ok=True)
        (directory / "nix-cache-info").write_text("StoreDir: /nix/store\n")
    except OSError as exc:
        raise StoreError(f"cannot write a binary cache in {directory}: {exc.strerror}") from None
    for built in fixture.paths:
        info = built.path_info
        file_hash, file_size, nar_file = await _write_nar_file(info, store, nar_dir, compression)
        narinfo = Narinfo(
            store_path=built.store_path,
            url=f"nar/{nar_file}",
            nar_hash=info.narinfo.nar_sha256,
            nar_size=info.narinfo.nar_size,
            compression=compression,
            file_hash=NixHash("sha256", file_hash),
            file_size=file_size,
            references=tuple(info.reference_paths),
            ca=info.narinfo.ca,
        )
        target = directory / f"{built.store_path.encoded_digest}.narinfo"
        try:
            target.write_text(narinfo.format())
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc.strerror}") from None


async def _write_nar_file(
    info: PathInfo, store: Store, nar_dir: Path, compression: str
) -> tuple[bytes, int, str]:
    """Stream the NAR (compressed) to a temporary file, then name it by its hash."""
    compressor = lzma.LZMACompressor(lzma.FORMAT_XZ) if compression == "xz" else None
    sha = hashlib.sha256()
    size = 0
    partial = nar_dir / f".partial-{os.getpid()}-{info.store_path.encoded_digest}"
    try:
        with partial.open("wb") as out:

            def emit(data: bytes) -> None:
                nonlocal size
                sha.update(data)
                size += len(data)
                out.write(data)

            async for chunk in write_nar(info.node, store.blobs, store.directories):
                emit(compressor.compress(chunk) if compressor else chunk)
            if compressor:
                emit(compressor.flush())
        name = nixbase32.encode(sha.digest()) + _NAR_SUFFIX[compression]
        partial.replace(nar_dir / name)
    except OSError as exc:
        raise StoreError(f"cannot write a NAR in {nar_dir}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    return sha.digest(), size, name


async def build_into(
    spec: FixtureSpec,
    url: str | None,
    options: StoreOptions | None = None,
    nix_cache: Path | None = None,
    compression: str = "xz",
) -> BuiltFixture:
    """Open the store at ``url`` (creating an embedded one), build, optionally write a cache."""
    store = open_store(url, options or StoreOptions(create=True))
    try:
        fixture = await build_fixture(spec, store)
        if nix_cache is not None:
            await write_nix_cache(fixture, store, nix_cache, compression)
    finally:
        await store.aclose()
    return fixture

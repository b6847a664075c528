"""Copying store paths between stores, as ``nix copy`` does.

A path and, unless told otherwise, its closure (references, recursively)
goes from any store to any store, references before the paths that refer
to them, so a destination never holds a path whose references it lacks.
Paths the destination has are skipped. Into a castore-backed store the
blobs and Directories go first and the PathInfo last; into a binary cache
the NAR, streamed from the source's castore, goes first and the narinfo
last (:mod:`tvixmount.stores.binarycache.writer`).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from . import loopless
from .castore.blobservice import BlobService, put_stream
from .castore.digest import B3Digest
from .castore.directory import Directory
from .castore.nodes import DirectoryNode, FileNode
from .errors import IntegrityError, NotFoundError
from .nar.narinfo import Narinfo
from .nar.writer import file_contents, write_nar
from .pathinfo.lookup import find_path_info
from .pathinfo.model import PathInfo
from .storepath import StorePath
from .stores import Store
from .stores.binarycache.compress import Progress
from .stores.binarycache.writer import BinaryCacheWriter

if TYPE_CHECKING:  # cryptography costs 100 ms to import; only signing needs it
    from .nar.signing import SecretKey

# Paths copied at once: the two cores each compress one (more multiplies the
# compressors' memory), and a remote store's round trips overlap.
JOBS = 2


@dataclasses.dataclass(frozen=True)
class Copied:
    """One path of the closure: copied, or found present at the destination."""

    info: PathInfo
    copied: bool
    narinfo: Narinfo | None = None  # what a binary cache destination got

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "path": self.info.store_path.absolute,
            "copied": self.copied,
            "narSize": self.info.narinfo.nar_size,
        }
        if self.narinfo is not None:
            out.update(
                url=self.narinfo.url,
                compression=self.narinfo.compression,
                fileHash=str(self.narinfo.file_hash),
                fileSize=self.narinfo.file_size,
                signatures=[str(sig) for sig in self.narinfo.signatures],
            )
        return out


class Adding(Protocol):
    """A path a destination has begun to add."""

    async def finish(self) -> Narinfo | None:
        """Complete the addition; what a binary cache destination got."""
        ...

    def discard(self) -> None:
        """Abandon it: the destination shows nothing of it."""
        ...


class Destination(Protocol):
    async def prepare(self) -> None: ...

    async def has(self, info: PathInfo) -> bool: ...

    async def start(self, info: PathInfo, source: Store, progress: Progress) -> Adding:
        """Begin adding ``info``: the source is read by the time this returns."""
        ...

    async def aclose(self) -> None: ...


class _Added:
    """A path added whole by ``start`` (into a store: no narinfo)."""

    async def finish(self) -> Narinfo | None:
        return None

    def discard(self) -> None:
        pass


class CacheDestination:
    """A binary cache (``file://``, ``s3://``)."""

    def __init__(self, writer: BinaryCacheWriter) -> None:
        self._writer = writer

    async def prepare(self) -> None:
        await self._writer.prepare()

    async def has(self, info: PathInfo) -> bool:
        return await self._writer.has(info.store_path)

    async def start(self, info: PathInfo, source: Store, progress: Progress) -> Adding:
        nar = write_nar(info.node, source.blobs, source.directories)
        return await self._writer.start(info, nar, progress)

    async def aclose(self) -> None:
        await self._writer.aclose()


class StoreDestination:
    """A castore-backed store (embedded, ``memory://``, gRPC); ``keys`` sign what it gets."""

    def __init__(self, store: Store, keys: Sequence[SecretKey]) -> None:
        self._store = store
        self._keys = tuple(keys)

    async def prepare(self) -> None:
        pass

    async def has(self, info: PathInfo) -> bool:
        return await find_path_info(self._store.pathinfos, info.store_path) is not None

    async def start(self, info: PathInfo, source: Store, progress: Progress) -> Adding:
        node = info.node
        if isinstance(node, DirectoryNode):
            directories = await _directory_closure(source, node.digest)
            for file in _files(directories):
                await _copy_blob(file, source.blobs, self._store.blobs, progress)
            await self._store.directories.put_many(directories)
        elif isinstance(node, FileNode):
            await _copy_blob(node, source.blobs, self._store.blobs, progress)
        if self._keys:
            from .nar.signing import sign_pathinfo

            info = sign_pathinfo(info, self._keys)
        await self._store.pathinfos.put(info)
        return _Added()

    async def aclose(self) -> None:
        await self._store.aclose()


async def _directory_closure(source: Store, root: B3Digest) -> list[Directory]:
    """Every Directory below ``root``, each after all those it refers to (as put_many wants)."""
    found = {d.digest(): d async for d in source.directories.get_recursive(root)}
    ordered: list[Directory] = []
    placed: set[B3Digest] = set()
    # Post-order with an explicit stack: a Directory shared by two parents at
    # different depths must precede both, which the breadth-first order does not give.
    stack: list[tuple[B3Digest, bool]] = [(root, False)]
    while stack:
        digest, children_done = stack.pop()
        if digest in placed:
            continue
        directory = found.get(digest)
        if directory is None:
            raise NotFoundError(f"directory {digest} not found in the source store")
        if children_done:
            placed.add(digest)
            ordered.append(directory)
            continue
        stack.append((digest, True))
        stack.extend((child.digest, False) for child in directory.directories)
    return ordered


def _files(directories: Sequence[Directory]) -> list[FileNode]:
    unique: dict[B3Digest, FileNode] = {}
    for directory in directories:
        for file in directory.files:
            unique.setdefault(file.digest, file)
    return list(unique.values())


async def _copy_blob(
    file: FileNode, source: BlobService, dest: BlobService, progress: Progress
) -> None:
    if await dest.has(file.digest):
        progress(file.size)
        return

    async def chunks() -> AsyncIterator[bytes]:
        async for data in file_contents(file, source):
            yield bytes(data)
            progress(len(data))

    digest = await put_stream(dest, chunks())
    if digest != file.digest:
        raise IntegrityError(f"blob {file.digest} of {file.name!r} arrived as {digest}")


async def closure(
    source: Store, paths: Sequence[StorePath], recursive: bool = True
) -> list[PathInfo]:
    """The PathInfos of ``paths`` (and their closure), every reference before its referrers."""
    ordered: list[PathInfo] = []
    infos: dict[StorePath, PathInfo] = {}
    placed: set[StorePath] = set()
    # Paths whose references are being placed: a reference cycle (which Nix never makes,
    # but a castore store can hold) must not send the walk round forever.
    visiting: set[StorePath] = set()

    async def lookup(path: StorePath, wanted_by: StorePath | None) -> PathInfo:
        info = infos.get(path)
        if info is None:
            info = await find_path_info(source.pathinfos, path)
            if info is None:
                why = f" (a reference of {wanted_by.absolute})" if wanted_by else ""
                raise NotFoundError(f"path '{path.absolute}'{why} is not in {source.url}")
            infos[path] = info
        return info

    for root in paths:
        stack: list[tuple[StorePath, StorePath | None, bool]] = [(root, None, False)]
        while stack:
            path, wanted_by, references_done = stack.pop()
            if path in placed or (path in visiting and not references_done):
                continue
            info = await lookup(path, wanted_by)
            if references_done or not recursive:
                placed.add(path)
                ordered.append(info)
                continue
            visiting.add(path)
            stack.append((path, wanted_by, True))
            for ref in sorted(info.reference_paths, reverse=True):
                if ref != path and ref not in placed:
                    stack.append((ref, path, False))
    return ordered


async def copy_paths(
    source: Store,
    destination: Destination,
    paths: Sequence[StorePath],
    recursive: bool = True,
    progress: Callable[[Sequence[PathInfo]], Callable[[PathInfo], Progress]] | None = None,
) -> list[Copied]:
    """Copy ``paths`` (with their closure unless ``recursive`` is false); what each became.

    Up to ``JOBS`` paths are copied at once (driven by
    :func:`tvixmount.loopless.run`: one NAR is made while the paths begun
    before it are compressed), each only after the references it has in
    the closure (a reader of the destination never sees a path whose
    references are missing).
    """
    await destination.prepare()  # a destination that cannot be written fails before any fetch
    infos = await closure(source, paths, recursive)
    missing = [info for info in infos if not await destination.has(info)]
    start = progress(missing) if progress is not None else None

    async def begin(info: PathInfo) -> Adding:
        return await destination.start(info, source, start(info) if start else _ignore)

    copy_all = _copy_pipelined if loopless.active() else _copy_concurrently
    done = await copy_all(missing, begin)
    return [Copied(info, info.store_path in done, done.get(info.store_path)) for info in infos]


async def _copy_pipelined(
    missing: Sequence[PathInfo], begin: Callable[[PathInfo], Awaitable[Adding]]
) -> dict[StorePath, Narinfo | None]:
    """Without an event loop (:mod:`tvixmount.loopless`): in the closure's order, each path
    finished once the next one is begun, so the compressor's tail of one runs while the
    next one's NAR is made."""
    done: dict[StorePath, Narinfo | None] = {}
    begun: deque[tuple[PathInfo, Adding]] = deque()

    async def finish_earliest() -> None:
        earlier, adding = begun.popleft()
        done[earlier.store_path] = await adding.finish()

    try:
        for info in missing:
            begun.append((info, await begin(info)))
            if len(begun) == JOBS:
                await finish_earliest()
        while begun:
            await finish_earliest()
    finally:
        for _, adding in begun:
            adding.discard()
    return done


async def _copy_concurrently(
    missing: Sequence[PathInfo], begin: Callable[[PathInfo], Awaitable[Adding]]
) -> dict[StorePath, Narinfo | None]:
    """Under trio: up to ``JOBS`` paths at once, each once its references have landed."""
    import trio

    done: dict[StorePath, Narinfo | None] = {}
    # A path waits only for references placed before it: the closure's order breaks cycles.
    landed = {info.store_path: trio.Event() for info in missing}
    limiter = trio.CapacityLimiter(JOBS)

    position = {info.store_path: index for index, info in enumerate(missing)}

    async def copy_one(info: PathInfo, index: int) -> None:
        for ref in info.reference_paths:
            if position.get(ref, index) < index:
                await landed[ref].wait()
        async with limiter:
            done[info.store_path] = await (await begin(info)).finish()
        landed[info.store_path].set()

    try:
        async with trio.open_nursery() as nursery:
            for index, info in enumerate(missing):
                nursery.start_soon(copy_one, info, index)
    except BaseExceptionGroup as group:
        from .castore.ingest import sole_error  # castore.ingest is not on a copy's way otherwise

        raise sole_error(group) from None
    return done


def _ignore(_: int) -> None:
    pass


__all__ = [
    "Adding",
    "CacheDestination",
    "Copied",
    "Destination",
    "StoreDestination",
    "closure",
    "copy_paths",
]

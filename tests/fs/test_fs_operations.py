"""TvixmountFS handlers called directly: errno mapping and lookup accounting."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from typing import Any, cast

import pyfuse3
import pytest
import trio
import trio.testing

from tests.fixtures import castore as fx
from tests.fs.memory_fs import memory_services
from tvixmount.castore.nodes import DirectoryNode, FileNode
from tvixmount.errors import NotFoundError, StoreError
from tvixmount.fs.inode_tracker import ROOT_INODE
from tvixmount.fs.inodes import CACHE_TIMEOUT
from tvixmount.fs.operations import ERRNO, Situation, TvixmountFS
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.pathinfo.root_nodes import PathInfoRootNodes
from tvixmount.stores.memory.castore import MemoryBlobService, MemoryDirectoryService
from tvixmount.stores.memory.pathinfo import MemoryPathInfoService

CTX = cast(pyfuse3.RequestContext, None)


class FailingPathInfos:
    def __init__(self, error: Exception) -> None:
        self._error = error

    async def get(self, digest: bytes) -> PathInfo | None:
        raise self._error

    async def put(self, info: PathInfo) -> PathInfo:
        raise self._error

    async def list(self) -> AsyncIterator[PathInfo]:
        raise self._error
        yield

    async def aclose(self) -> None:
        pass


async def _fs(**kwargs: Any) -> TvixmountFS:
    blobs, directories, root_nodes = await memory_services()
    return TvixmountFS(root_nodes, blobs, directories, **kwargs)


async def _errno_of(call: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await call
    return excinfo.value.errno


@pytest.mark.parametrize("error", [StoreError("backend down"), RuntimeError("a bug")])
async def test_pathinfo_service_error_is_eio(error: Exception) -> None:
    fs = TvixmountFS(
        PathInfoRootNodes(FailingPathInfos(error)), MemoryBlobService(), MemoryDirectoryService()
    )
    assert await _errno_of(fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)) == errno.EIO


async def test_unknown_root_name_is_enoent() -> None:
    fs = await _fs()
    assert await _errno_of(fs.lookup(ROOT_INODE, b"z" * 32 + b"-x", CTX)) == errno.ENOENT


async def test_unknown_name_below_the_root_is_a_cached_negative_entry() -> None:
    fs = await _fs()
    directory = await fs.lookup(ROOT_INODE, fx.ROOT_DIRECTORY_COMPLICATED, CTX)
    before = len(fs.inodes)
    attrs = await fs.lookup(directory.st_ino, b"no-such-name", CTX)
    # Inode 0 is FUSE's negative entry: the kernel answers ENOENT from its cache.
    assert (attrs.st_ino, attrs.entry_timeout) == (0, CACHE_TIMEOUT)
    assert len(fs.inodes) == before


async def test_root_opendir_without_list_root_is_eperm() -> None:
    fs = await _fs()
    assert await _errno_of(fs.opendir(ROOT_INODE, CTX)) == errno.EPERM


async def test_lookup_raises_the_lookup_count() -> None:
    fs = await _fs()
    attrs = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)
    await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)
    assert fs.inodes.lookup_count(attrs.st_ino) == 2


async def test_forget_frees_looked_up_inodes() -> None:
    fs = await _fs()
    attrs = await fs.lookup(ROOT_INODE, fx.ROOT_DIRECTORY_COMPLICATED, CTX)
    await fs.forget([(attrs.st_ino, 1)])
    assert len(fs.inodes) == 1
    assert await _errno_of(fs.getattr(attrs.st_ino, CTX)) == errno.ENOENT


async def test_every_entry_attribute_has_long_timeouts() -> None:
    fs = await _fs()
    root = await fs.getattr(ROOT_INODE, CTX)
    child = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)
    for attrs in (root, child):
        assert attrs.entry_timeout >= 86400
        assert attrs.attr_timeout >= 86400


async def test_read_is_a_positioned_slice() -> None:
    fs = await _fs()
    attrs = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_B, CTX)
    info = await fs.open(attrs.st_ino, os.O_RDONLY, CTX)
    assert info.keep_cache
    try:
        data = await fs.read(info.fh, 1001, 4096)
        assert bytes(data) == fx.BLOB_B[1001 : 1001 + 4096]
    finally:
        await fs.release(info.fh)


async def test_xattrs_disabled_is_enosys() -> None:
    fs = await _fs(xattr=False)
    attrs = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)
    name = b"user.tvix.castore.blob.digest"
    assert await _errno_of(fs.getxattr(attrs.st_ino, name, CTX)) == errno.ENOSYS
    assert await _errno_of(fs.listxattr(attrs.st_ino, CTX)) == errno.ENOSYS


async def test_readlink_of_a_file_is_einval() -> None:
    fs = await _fs()
    attrs = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)
    assert await _errno_of(fs.readlink(attrs.st_ino, CTX)) == errno.EINVAL


async def test_open_of_a_directory_is_eisdir() -> None:
    fs = await _fs()
    attrs = await fs.lookup(ROOT_INODE, fx.ROOT_DIRECTORY_WITH_KEEP, CTX)
    assert await _errno_of(fs.open(attrs.st_ino, os.O_RDONLY, CTX)) == errno.EISDIR


async def test_lookup_below_a_file_is_enotdir() -> None:
    fs = await _fs()
    attrs = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)
    assert await _errno_of(fs.lookup(attrs.st_ino, b"x", CTX)) == errno.ENOTDIR


async def test_write_handlers_are_erofs() -> None:
    fs = await _fs()
    assert await _errno_of(fs.mkdir(ROOT_INODE, b"d", 0o755, CTX)) == errno.EROFS
    assert await _errno_of(fs.unlink(ROOT_INODE, fx.ROOT_BLOB_A, CTX)) == errno.EROFS
    assert await _errno_of(fs.create(ROOT_INODE, b"f", 0o644, os.O_WRONLY, CTX)) == errno.EROFS
    assert await _errno_of(fs.write(1, 0, b"x")) == errno.EROFS


async def test_open_for_writing_is_erofs() -> None:
    fs = await _fs()
    attrs = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)
    assert await _errno_of(fs.open(attrs.st_ino, os.O_RDWR, CTX)) == errno.EROFS


class SlowPathInfos(MemoryPathInfoService):
    """Yields to other tasks inside every get, so concurrent lookups interleave."""

    async def get(self, digest: bytes) -> PathInfo | None:
        await trio.sleep(0.01)
        return await super().get(digest)


async def test_racing_lookups_of_one_store_path_share_one_inode() -> None:
    pathinfos = SlowPathInfos()
    await pathinfos.put(PathInfo(fx.ROOT_NODES[0], (), NarInfo(0, bytes(32))))
    fs = TvixmountFS(PathInfoRootNodes(pathinfos), MemoryBlobService(), MemoryDirectoryService())
    inodes: list[int] = []

    async def look() -> None:
        inodes.append((await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)).st_ino)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(look)
    assert len(set(inodes)) == 1
    assert fs.inodes.lookup_count(inodes[0]) == 8
    assert len(fs.inodes) == 2


class _HeldBlobs:
    """Blob reads wait until ``release`` is set (a slow store)."""

    def __init__(self, inner: MemoryBlobService) -> None:
        self._inner = inner
        self.release = trio.Event()

    async def open_read(self, digest: Any) -> Any:
        found = await self._inner.open_read(digest)
        assert found is not None
        reader = found  # typed without None, for the methods below
        held = self.release

        class Held:
            size = reader.size

            async def pread(self, offset: int, length: int) -> bytes | memoryview:
                await held.wait()
                return await reader.pread(offset, length)

            async def aclose(self) -> None:
                await reader.aclose()

        return Held()


async def test_opens_during_a_push_wait_for_it_and_only_the_first_pushes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An open that returned while its inode's push is pending could READ and
    # lock the very pages the push then waits for, deadlocking the loop.
    events: list[tuple[str, object]] = []
    monkeypatch.setattr(
        pyfuse3, "notify_store", lambda inode, off, data: events.append(("pushed", bytes(data)))
    )
    fs = await _fs()
    held = _HeldBlobs(fs._blobs)  # type: ignore[arg-type]
    fs._blobs = held  # type: ignore[assignment]
    inode = (await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)).st_ino

    async def opener(tag: int) -> None:
        info = await fs.open(inode, os.O_RDONLY, CTX)
        events.append(("opened", tag))
        await fs.release(info.fh)

    async with trio.open_nursery() as nursery:
        for tag in (1, 2, 3):
            nursery.start_soon(opener, tag)
        await trio.testing.wait_all_tasks_blocked()
        assert events == [], "an open returned before the push was in"
        held.release.set()
    assert events[0] == ("pushed", fx.BLOB_A)
    assert sorted(events[1:]) == [("opened", 1), ("opened", 2), ("opened", 3)]
    # Pushed once: a later open pushes nothing.
    info = await fs.open(inode, os.O_RDONLY, CTX)
    await fs.release(info.fh)
    assert [e for e in events if e[0] == "pushed"] == [("pushed", fx.BLOB_A)]


async def _fs_with_root(node: FileNode) -> TvixmountFS:
    blobs, directories, root_nodes = await memory_services(node)
    return TvixmountFS(root_nodes, blobs, directories)


@pytest.mark.parametrize("lie", [-100, -1, 1], ids=["smaller", "one-smaller", "larger"])
async def test_a_file_node_whose_size_is_not_its_blobs_is_eio_never_a_prefix(lie: int) -> None:
    # A smaller size would serve a prefix of the content: a script cut short.
    node = FileNode(fx.ROOT_BLOB_B, fx.BLOB_B_DIGEST, len(fx.BLOB_B) + lie, True)
    fs = await _fs_with_root(node)
    attrs = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_B, CTX)
    assert attrs.st_size == len(fx.BLOB_B) + lie  # stat still works
    assert await _errno_of(fs.open(attrs.st_ino, os.O_RDONLY, CTX)) == errno.EIO
    assert await _errno_of(fs.open(attrs.st_ino, os.O_RDONLY, CTX)) == errno.EIO


class _CountingBlobs:
    def __init__(self, inner: MemoryBlobService) -> None:
        self._inner = inner
        self.opened = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def open_read(self, digest: Any) -> Any:
        self.opened += 1
        return await self._inner.open_read(digest)


async def test_re_opening_a_checked_file_makes_no_store_call_until_a_read_reaches_it() -> None:
    fs = await _fs()
    blobs = _CountingBlobs(fs._blobs)  # type: ignore[arg-type]
    fs._blobs = blobs
    inode = (await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_B, CTX)).st_ino
    first = await fs.open(inode, os.O_RDONLY, CTX)
    await fs.release(first.fh)
    assert blobs.opened == 1
    again = await fs.open(inode, os.O_RDONLY, CTX)
    assert blobs.opened == 1  # answered from what the first open checked
    # A read the page cache could not answer opens the blob then.
    assert bytes(await fs.read(again.fh, 4096, 10)) == fx.BLOB_B[4096:4106]
    assert blobs.opened == 2
    await fs.release(again.fh)
    # Forgotten, the inode's content is checked afresh on its next open.
    await fs.forget([(inode, 1)])
    inode = (await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_B, CTX)).st_ino
    await fs.release((await fs.open(inode, os.O_RDONLY, CTX)).fh)
    assert blobs.opened == 3


class _NotFoundEverywhere:
    """Root names and Directories whose services answer NotFoundError."""

    async def lookup(self, name: bytes) -> Any:
        raise NotFoundError("no such path")

    def list(self) -> Any:
        raise NotFoundError("no such path")

    async def get(self, digest: Any) -> Any:
        raise NotFoundError("no such directory")


async def test_not_found_means_enoent_for_a_root_name_and_eio_for_content() -> None:
    """The errno depends on what was not found, never on which handler caught it."""
    missing = _NotFoundEverywhere()
    fs = TvixmountFS(missing, MemoryBlobService(), missing)  # type: ignore[arg-type]
    assert await _errno_of(fs.lookup(ROOT_INODE, fx.ROOT_DIRECTORY_COMPLICATED, CTX)) == (
        errno.ENOENT
    )
    node = DirectoryNode(b"d", fx.DIRECTORY_COMPLICATED.digest(), fx.DIRECTORY_COMPLICATED.size())
    inode, _ = fs.inodes.remember(node)
    assert await _errno_of(fs.lookup(inode, b"keep", CTX)) == errno.EIO
    assert await _errno_of(fs.opendir(inode, CTX)) == errno.EIO


def test_every_situation_has_an_errno() -> None:
    assert set(ERRNO) == set(Situation)

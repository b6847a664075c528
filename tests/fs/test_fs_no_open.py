"""TvixmountFS in FUSE's no-open mode, handlers called directly.

The kernel then opens files itself and reads them by inode (pyfuse3 with
tvixmount's patch passes the inode as the handle), so the filesystem keeps
each read file's blob open by inode, bounded, and checks it at the first read.
"""

from __future__ import annotations

import errno
import os
from typing import Any, cast

import pyfuse3
import pytest
import trio
import trio.testing

from tests.fixtures import castore as fx
from tests.fs.memory_fs import memory_services
from tvixmount.castore.blobservice import BlobReader, put_stream
from tvixmount.castore.digest import B3Digest
from tvixmount.castore.nodes import FileNode
from tvixmount.fs.handles import FilesByInode
from tvixmount.fs.inode_tracker import ROOT_INODE
from tvixmount.fs.inodes import FileInode
from tvixmount.fs.operations import OPEN_FILES, TvixmountFS
from tvixmount.stores.memory.castore import MemoryBlobService

CTX = cast(pyfuse3.RequestContext, None)


class _Reader:
    """A blob reader that counts its closes and can hold its reads."""

    def __init__(self, inner: BlobReader, blobs: _Blobs) -> None:
        self._inner = inner
        self._blobs = blobs
        self.closed = False

    @property
    def size(self) -> int:
        return self._inner.size

    async def pread(self, offset: int, length: int) -> bytes | memoryview:
        assert not self.closed, "read from a closed reader"
        self._blobs.reading += 1
        try:
            await self._blobs.reads_go.wait()
            assert not self.closed, "reader closed under a read"
            return await self._inner.pread(offset, length)
        finally:
            self._blobs.reading -= 1

    async def aclose(self) -> None:
        self.closed = True
        self._blobs.closed += 1
        await self._inner.aclose()


class _Blobs:
    """The memory blob service, counting what is opened and closed."""

    def __init__(self, inner: MemoryBlobService) -> None:
        self._inner = inner
        self.opened = 0
        self.closed = 0
        self.reading = 0
        self.opens_go = trio.Event()
        self.opens_go.set()
        self.reads_go = trio.Event()
        self.reads_go.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def open_read(self, digest: B3Digest) -> _Reader | None:
        self.opened += 1
        await self.opens_go.wait()
        inner = await self._inner.open_read(digest)
        return None if inner is None else _Reader(inner, self)


async def _fs(*roots: FileNode) -> tuple[TvixmountFS, _Blobs]:
    memory, directories, root_nodes = await memory_services(*roots)
    blobs = _Blobs(memory)
    return TvixmountFS(root_nodes, blobs, directories, no_open=True), blobs


async def _errno_of(call: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await call
    return excinfo.value.errno


async def _file(fs: TvixmountFS, name: bytes) -> int:
    return (await fs.lookup(ROOT_INODE, name, CTX)).st_ino


async def test_open_answers_enosys_after_its_checks() -> None:
    fs, blobs = await _fs()
    inode = await _file(fs, fx.ROOT_BLOB_B)
    assert await _errno_of(fs.open(inode, os.O_RDONLY, CTX)) == errno.ENOSYS
    assert blobs.opened == 0  # nothing fetched: the first read checks the blob
    # What open refuses, it still refuses (should the kernel ask).
    assert await _errno_of(fs.open(inode, os.O_WRONLY, CTX)) == errno.EROFS
    directory = await _file(fs, fx.ROOT_DIRECTORY_WITH_KEEP)
    assert await _errno_of(fs.open(directory, os.O_RDONLY, CTX)) == errno.EISDIR


async def test_reads_name_the_inode_and_open_its_blob_once() -> None:
    fs, blobs = await _fs()
    inode = await _file(fs, fx.ROOT_BLOB_B)
    assert bytes(await fs.read(inode, 1001, 4096)) == fx.BLOB_B[1001 : 1001 + 4096]
    assert bytes(await fs.read(inode, 0, 10)) == fx.BLOB_B[:10]
    assert bytes(await fs.read(inode, len(fx.BLOB_B), 10)) == b""
    assert blobs.opened == 1


async def test_concurrent_first_reads_share_one_open() -> None:
    fs, blobs = await _fs()
    inode = await _file(fs, fx.ROOT_BLOB_B)
    blobs.opens_go = trio.Event()
    got: list[bytes] = []

    async def read(offset: int) -> None:
        got.append(bytes(await fs.read(inode, offset, 100)))

    async with trio.open_nursery() as nursery:
        for offset in (0, 100, 200):
            nursery.start_soon(read, offset)
        await trio.testing.wait_all_tasks_blocked()
        blobs.opens_go.set()
    assert blobs.opened == 1  # not three readers, two of them never closed
    assert sorted(got) == sorted(fx.BLOB_B[o : o + 100] for o in (0, 100, 200))


@pytest.mark.parametrize("lie", [-1, 1], ids=["smaller", "larger"])
async def test_a_file_node_whose_size_is_not_its_blobs_is_eio_at_every_read(lie: int) -> None:
    node = FileNode(fx.ROOT_BLOB_B, fx.BLOB_B_DIGEST, len(fx.BLOB_B) + lie, False)
    fs, blobs = await _fs(node)
    inode = await _file(fs, fx.ROOT_BLOB_B)
    assert await _errno_of(fs.read(inode, 0, 4096)) == errno.EIO
    assert await _errno_of(fs.read(inode, 0, 4096)) == errno.EIO  # never a prefix later
    assert blobs.closed == blobs.opened  # each reader that failed the check was closed


async def test_a_missing_blob_is_eio_at_read() -> None:
    node = FileNode(fx.ROOT_BLOB_B, B3Digest(bytes(32)), 10, False)
    fs, _ = await _fs(node)
    inode = await _file(fs, fx.ROOT_BLOB_B)
    assert await _errno_of(fs.read(inode, 0, 10)) == errno.EIO


async def test_a_read_of_what_is_not_a_file_is_ebadf_and_of_a_forgotten_inode_enoent() -> None:
    fs, _ = await _fs()
    directory = await _file(fs, fx.ROOT_DIRECTORY_WITH_KEEP)
    assert await _errno_of(fs.read(directory, 0, 10)) == errno.EBADF
    assert await _errno_of(fs.read(directory + 1000, 0, 10)) == errno.ENOENT


async def _distinct_files(fs: TvixmountFS, blobs: _Blobs, count: int) -> list[tuple[int, bytes]]:
    """``count`` file inodes of different contents (same content would be one inode)."""
    files = []
    for i in range(count):
        content = os.urandom(100 + i)
        digest = await put_stream(blobs._inner, [content])
        inode, _ = fs.inodes.remember(FileNode(b"f%d" % i, digest, len(content), False))
        files.append((inode, content))
    return files


async def test_open_blobs_are_bounded_and_closed_least_recently_read_first() -> None:
    fs, blobs = await _fs()
    files = await _distinct_files(fs, blobs, OPEN_FILES + 10)
    for inode, content in files:
        assert bytes(await fs.read(inode, 0, 4096)) == content
    assert blobs.opened == len(files)
    assert blobs.opened - blobs.closed == OPEN_FILES  # the 10 least recently read closed
    # The first file, read again, is opened again.
    first, content = files[0]
    assert bytes(await fs.read(first, 0, 4096)) == content
    assert blobs.opened == len(files) + 1
    # A file still open is read without opening it again.
    last, content = files[-1]
    assert bytes(await fs.read(last, 0, 4096)) == content
    assert blobs.opened == len(files) + 1


async def test_a_blob_in_use_is_not_closed_under_its_read() -> None:
    fs, blobs = await _fs()
    files = await _distinct_files(fs, blobs, OPEN_FILES + 1)
    held, held_content = files[0]
    got: list[bytes] = []

    async def read_held() -> None:
        got.append(bytes(await fs.read(held, 0, 4096)))

    async with trio.open_nursery() as nursery:
        blobs.reads_go = trio.Event()
        nursery.start_soon(read_held)  # the least recently read file, held mid-read
        await trio.testing.wait_all_tasks_blocked()
        assert blobs.reading == 1
        reads_go, blobs.reads_go = blobs.reads_go, trio.Event()
        blobs.reads_go.set()
        # Every other file is read meanwhile: past the limit, the held file is
        # the least recently read, but in use, so the next one is closed.
        for inode, content in files[1:]:
            assert bytes(await fs.read(inode, 0, 4096)) == content
        assert blobs.closed == 1
        reads_go.set()
    assert got == [held_content]  # and _Reader asserts it was not closed under the read
    assert blobs.closed == 1
    assert blobs.opened - blobs.closed == OPEN_FILES


async def test_forget_closes_the_inodes_blob() -> None:
    fs, blobs = await _fs()
    inode = await _file(fs, fx.ROOT_BLOB_B)
    await fs.read(inode, 0, 10)
    assert blobs.closed == 0
    await fs.forget([(inode, 1)])
    assert blobs.closed == 1


def _reader_of(files: FilesByInode) -> Any:
    def read(inode: int, size: int) -> list[int]:
        handle = files.use(inode, FileInode(B3Digest(bytes(32)), size, False))
        return [h.data.size for h in files.done(inode, handle)]

    return read


def test_kept_files_are_bounded_in_bytes_but_the_file_being_read_stays() -> None:
    files = FilesByInode(limit=10, bytes_limit=100, keep=1)
    read = _reader_of(files)
    assert read(1, 40) == []
    assert read(2, 50) == []
    assert read(3, 30) == [40]  # 120 bytes kept: the least recently read goes
    assert read(4, 500) == [50, 30]  # all others go; the one being read stays
    assert read(4, 500) == []  # and is kept while it is read on
    assert len(files) == 1
    assert read(5, 10) == [500]


def test_big_files_read_side_by_side_keep_their_blobs_open() -> None:
    files = FilesByInode(limit=10, bytes_limit=100, keep=2)
    read = _reader_of(files)
    for _ in range(5):
        assert read(1, 80) == []
        assert read(2, 90) == []
    assert read(3, 10) == [80]  # a third file: the least recently read goes


async def test_concurrent_reads_of_a_blob_failing_to_open_fail_together() -> None:
    """Each waiting read fails with the first one's error, not after its own try:
    else a store that never answers makes the nth read wait n deadlines."""
    node = FileNode(fx.ROOT_BLOB_B, fx.BLOB_B_DIGEST, len(fx.BLOB_B) + 1, False)
    fs, blobs = await _fs(node)
    inode = await _file(fs, fx.ROOT_BLOB_B)
    blobs.opens_go = trio.Event()
    errnos: list[int] = []

    async def read(offset: int) -> None:
        errnos.append(await _errno_of(fs.read(inode, offset, 100)))

    async with trio.open_nursery() as nursery:
        for offset in (0, 100, 200, 300):
            nursery.start_soon(read, offset)
        await trio.testing.wait_all_tasks_blocked()
        blobs.opens_go.set()
    assert errnos == [errno.EIO] * 4
    assert blobs.opened == 1
    # Nothing is remembered: the next read tries again.
    assert await _errno_of(fs.read(inode, 0, 100)) == errno.EIO
    assert blobs.opened == 2


async def test_a_file_forgotten_during_its_read_is_closed_when_the_read_is_done() -> None:
    fs, blobs = await _fs()
    inode = await _file(fs, fx.ROOT_BLOB_B)
    await fs.read(inode, 0, 10)  # the blob is open
    blobs.reads_go = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.read, inode, 100, 10)
        await trio.testing.wait_all_tasks_blocked()
        await fs.forget([(inode, 1)])
        assert blobs.closed == 0  # not under the read
        blobs.reads_go.set()
    assert blobs.closed == 1

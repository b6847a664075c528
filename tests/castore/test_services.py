"""One behaviour suite for the blob, directory and path-info services of every
embedded store kind (``memory://`` and the local store directory)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fixtures.castore import (
    BLOB_A,
    BLOB_A_DIGEST,
    BLOB_B,
    BLOB_B_DIGEST,
    DIRECTORIES,
    DIRECTORY_COMPLICATED,
    DIRECTORY_WITH_KEEP,
    EMPTY_BLOB,
    EMPTY_DIGEST,
    HELLOWORLD_BLOB,
    ROOT_DIRECTORY_COMPLICATED,
)
from tvixmount.castore import B3Digest, Directory, DirectoryNode, FileNode
from tvixmount.castore.blobservice import put_stream, read_all
from tvixmount.errors import IntegrityError, NotFoundError, ValidationError
from tvixmount.pathinfo import NarInfo, PathInfo
from tvixmount.storepath import StorePath
from tvixmount.stores import Store, StoreOptions, open_store
from tvixmount.stores.local.castore import LocalBlobService
from tvixmount.stores.memory.castore import MemoryBlobService


@pytest.fixture(params=["memory", "local"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = "memory://" if request.param == "memory" else str(tmp_path / "store")
    opened = open_store(url, StoreOptions(create=True))
    try:
        yield opened
    finally:
        await opened.aclose()


def _stored_bytes(store: Store) -> int:
    """The bytes in the local store's blob files and packs (a blob's copies count each)."""
    assert isinstance(store.blobs, LocalBlobService)
    places = (store.blobs.blob_dir, store.blobs.pack_dir)
    return sum(p.stat().st_size for place in places for p in place.rglob("*") if p.is_file())


# --- blobs -----------------------------------------------------------------


async def test_put_returns_blake3_digest(store: Store) -> None:
    assert await put_stream(store.blobs, [HELLOWORLD_BLOB[:5], HELLOWORLD_BLOB[5:]]) == (
        B3Digest.of(HELLOWORLD_BLOB)
    )


async def test_put_accepts_an_async_stream(store: Store) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield BLOB_A[:1]
        yield BLOB_A[1:]

    assert await put_stream(store.blobs, chunks()) == BLOB_A_DIGEST


async def test_has_after_put(store: Store) -> None:
    await put_stream(store.blobs, [BLOB_A])
    assert await store.blobs.has(BLOB_A_DIGEST)


async def test_has_absent_is_false(store: Store) -> None:
    assert not await store.blobs.has(BLOB_A_DIGEST)


async def test_open_read_absent_is_none(store: Store) -> None:
    assert await store.blobs.open_read(BLOB_B_DIGEST) is None


async def test_read_back_whole_blob(store: Store) -> None:
    await put_stream(store.blobs, [BLOB_B])
    reader = await store.blobs.open_read(BLOB_B_DIGEST)
    assert reader is not None
    try:
        assert reader.size == len(BLOB_B)
        assert await read_all(reader) == BLOB_B
    finally:
        await reader.aclose()


async def test_empty_blob_round_trips(store: Store) -> None:
    assert await put_stream(store.blobs, []) == EMPTY_DIGEST
    reader = await store.blobs.open_read(EMPTY_DIGEST)
    assert reader is not None
    try:
        assert reader.size == 0
        assert await read_all(reader) == EMPTY_BLOB
    finally:
        await reader.aclose()


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 10), (1000, 4096), (len(BLOB_B) - 5, 5), (12345, 0)]
)
async def test_pread_at_offset(store: Store, offset: int, length: int) -> None:
    await put_stream(store.blobs, [BLOB_B])
    reader = await store.blobs.open_read(BLOB_B_DIGEST)
    assert reader is not None
    try:
        assert bytes(await reader.pread(offset, length)) == BLOB_B[offset : offset + length]
    finally:
        await reader.aclose()


async def test_pread_past_the_end_is_short(store: Store) -> None:
    await put_stream(store.blobs, [BLOB_B])
    reader = await store.blobs.open_read(BLOB_B_DIGEST)
    assert reader is not None
    try:
        assert bytes(await reader.pread(len(BLOB_B) - 3, 100)) == BLOB_B[-3:]
        assert bytes(await reader.pread(len(BLOB_B) + 10, 100)) == b""
    finally:
        await reader.aclose()


async def test_putting_a_blob_twice_keeps_one_copy(store: Store) -> None:
    assert await put_stream(store.blobs, [BLOB_A]) == await put_stream(store.blobs, [BLOB_A])
    if isinstance(store.blobs, LocalBlobService):
        assert _stored_bytes(store) == len(BLOB_A)


async def test_chunks_of_unchunked_blob_is_empty_list(store: Store) -> None:
    await put_stream(store.blobs, [BLOB_A])
    assert await store.blobs.chunks(BLOB_A_DIGEST) == []


async def test_chunks_of_absent_blob_is_none(store: Store) -> None:
    assert await store.blobs.chunks(BLOB_A_DIGEST) is None


async def test_aborted_writer_leaves_nothing(store: Store) -> None:
    writer = await store.blobs.open_write()
    await writer.write(HELLOWORLD_BLOB)
    await writer.abort()
    assert not await store.blobs.has(B3Digest.of(HELLOWORLD_BLOB))
    if isinstance(store.blobs, LocalBlobService):
        assert _stored_bytes(store) == 0
        assert list(store.blobs.tmp_dir.iterdir()) == []


async def test_failing_stream_aborts_the_writer(store: Store) -> None:
    def chunks() -> Iterator[bytes]:
        yield HELLOWORLD_BLOB
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        await put_stream(store.blobs, chunks())
    assert not await store.blobs.has(B3Digest.of(HELLOWORLD_BLOB))
    if isinstance(store.blobs, LocalBlobService):
        assert list(store.blobs.tmp_dir.iterdir()) == []


async def test_blob_corrupted_on_disk_fails_integrity_check_on_open(store: Store) -> None:
    await put_stream(store.blobs, [HELLOWORLD_BLOB])
    digest = B3Digest.of(HELLOWORLD_BLOB)
    if isinstance(store.blobs, LocalBlobService):
        location = store.blobs.location_of(digest)
        assert location is not None
        os.chmod(location.path, 0o644)
        with location.path.open("r+b") as f:
            os.pwrite(f.fileno(), b"Hello World?", location.offset)
    else:
        assert isinstance(store.blobs, MemoryBlobService)
        store.blobs.blobs[digest] = b"Hello World?"
    with pytest.raises(IntegrityError, match=r"corrupt|does not match"):
        await store.blobs.open_read(digest)


# --- directories -----------------------------------------------------------


async def test_put_many_returns_root_digest(store: Store) -> None:
    assert await store.directories.put_many(DIRECTORIES) == DIRECTORY_COMPLICATED.digest()


async def test_get_after_put_many(store: Store) -> None:
    await store.directories.put_many(DIRECTORIES)
    assert await store.directories.get(DIRECTORY_WITH_KEEP.digest()) == DIRECTORY_WITH_KEEP
    assert await store.directories.get(DIRECTORY_COMPLICATED.digest()) == DIRECTORY_COMPLICATED


async def test_get_absent_is_none(store: Store) -> None:
    assert await store.directories.get(DIRECTORY_WITH_KEEP.digest()) is None


async def test_put_many_of_a_single_leaf(store: Store) -> None:
    assert await store.directories.put_many([DIRECTORY_WITH_KEEP]) == DIRECTORY_WITH_KEEP.digest()


async def test_put_many_accepts_child_stored_earlier(store: Store) -> None:
    await store.directories.put_many([DIRECTORY_WITH_KEEP])
    await store.directories.put_many([DIRECTORY_COMPLICATED])
    assert await store.directories.get(DIRECTORY_COMPLICATED.digest()) == DIRECTORY_COMPLICATED


async def test_put_many_accepts_empty_directory_child_in_batch(store: Store) -> None:
    empty = Directory()
    parent = Directory.from_nodes([DirectoryNode(b"empty", empty.digest(), 0)])
    assert await store.directories.put_many([empty, parent]) == parent.digest()
    assert await store.directories.get(empty.digest()) == empty


async def test_put_many_rejects_absent_child_and_stores_nothing(store: Store) -> None:
    with pytest.raises(ValidationError, match=r"b'keep'.*neither stored nor put"):
        await store.directories.put_many([DIRECTORY_COMPLICATED])
    assert await store.directories.get(DIRECTORY_COMPLICATED.digest()) is None


async def test_put_many_rejects_root_first_order(store: Store) -> None:
    with pytest.raises(ValidationError, match="neither stored nor put"):
        await store.directories.put_many([DIRECTORY_COMPLICATED, DIRECTORY_WITH_KEEP])
    assert await store.directories.get(DIRECTORY_WITH_KEEP.digest()) is None


async def test_put_many_rejects_wrong_child_size_and_stores_nothing(store: Store) -> None:
    parent = Directory.from_nodes([DirectoryNode(b"keep", DIRECTORY_WITH_KEEP.digest(), 7)])
    with pytest.raises(ValidationError, match=r"b'keep' has size 7.*has size 1"):
        await store.directories.put_many([DIRECTORY_WITH_KEEP, parent])
    assert await store.directories.get(DIRECTORY_WITH_KEEP.digest()) is None


async def test_put_many_rejects_invalid_directory(store: Store) -> None:
    bad = Directory(files=(FileNode(b"b", EMPTY_DIGEST, 0), FileNode(b"a", EMPTY_DIGEST, 0)))
    with pytest.raises(ValidationError, match="not sorted"):
        await store.directories.put_many([bad])
    assert await store.directories.get(bad.digest()) is None


async def test_put_many_rejects_empty_batch(store: Store) -> None:
    with pytest.raises(ValidationError, match="no directories"):
        await store.directories.put_many([])


def _tree() -> tuple[list[Directory], list[Directory]]:
    """A three-level tree; returns (leaves-first put order, expected BFS order)."""
    leaf_a = Directory.from_nodes([FileNode(b"a", BLOB_A_DIGEST, 2)])
    leaf_b = Directory.from_nodes([FileNode(b"b", BLOB_A_DIGEST, 2)])
    mid = Directory.from_nodes([DirectoryNode(b"deep", leaf_b.digest(), leaf_b.size())])
    root = Directory.from_nodes(
        [
            DirectoryNode(b"x-mid", mid.digest(), mid.size()),
            DirectoryNode(b"y-leaf", leaf_a.digest(), leaf_a.size()),
            # The same subtree twice: it must be sent only once.
            DirectoryNode(b"z-again", leaf_a.digest(), leaf_a.size()),
        ]
    )
    return [leaf_b, leaf_a, mid, root], [root, mid, leaf_a, leaf_b]


async def test_get_recursive_is_breadth_first_from_the_root(store: Store) -> None:
    put_order, bfs_order = _tree()
    root = await store.directories.put_many(put_order)
    assert [d async for d in store.directories.get_recursive(root)] == bfs_order


async def test_get_recursive_sends_parents_before_children(store: Store) -> None:
    put_order, _ = _tree()
    root = await store.directories.put_many(put_order)
    seen = {root}
    async for directory in store.directories.get_recursive(root):
        assert directory.digest() in seen
        seen.update(child.digest for child in directory.directories)


async def test_get_recursive_of_absent_root_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        async for _ in store.directories.get_recursive(DIRECTORY_WITH_KEEP.digest()):
            pass


# --- path infos ------------------------------------------------------------


def _path_info(name: bytes = ROOT_DIRECTORY_COMPLICATED) -> PathInfo:
    return PathInfo(
        node=DirectoryNode(name, DIRECTORY_COMPLICATED.digest(), DIRECTORY_COMPLICATED.size()),
        references=(),
        narinfo=NarInfo(nar_size=1234, nar_sha256=bytes(range(32))),
    )


async def test_pathinfo_get_after_put(store: Store) -> None:
    info = _path_info()
    assert await store.pathinfos.put(info) == info
    assert await store.pathinfos.get(info.store_path.digest) == info


async def test_pathinfo_get_absent_is_none(store: Store) -> None:
    assert await store.pathinfos.get(bytes(20)) is None


async def test_pathinfo_list_yields_every_put(store: Store) -> None:
    infos = [_path_info(f"{d * 32}-test".encode()) for d in "123"]
    for info in infos:
        await store.pathinfos.put(info)
    listed = [i async for i in store.pathinfos.list()]
    assert sorted(listed, key=lambda i: i.store_path) == infos


async def test_pathinfo_list_of_empty_store_is_empty(store: Store) -> None:
    assert [i async for i in store.pathinfos.list()] == []


async def test_pathinfo_put_replaces_by_store_path(store: Store) -> None:
    first = _path_info()
    second = PathInfo(first.node, (), NarInfo(nar_size=99, nar_sha256=bytes(32)))
    await store.pathinfos.put(first)
    await store.pathinfos.put(second)
    assert await store.pathinfos.get(first.store_path.digest) == second


async def test_pathinfo_put_rejects_mismatched_reference_and_stores_nothing(store: Store) -> None:
    ref = StorePath(bytes(20), "dep")
    info = PathInfo(
        _path_info().node,
        (b"\x01" * 20,),
        NarInfo(nar_size=1, nar_sha256=bytes(32), reference_names=(str(ref),)),
    )
    with pytest.raises(ValidationError, match="does not match reference 0"):
        await store.pathinfos.put(info)
    assert await store.pathinfos.get(info.store_path.digest) is None


async def test_pathinfo_put_rejects_bad_root_name(store: Store) -> None:
    info = PathInfo(FileNode(b"hello", BLOB_A_DIGEST, 2), (), NarInfo(2, bytes(32)))
    with pytest.raises(ValidationError, match="not a store path"):
        await store.pathinfos.put(info)
    assert [i async for i in store.pathinfos.list()] == []

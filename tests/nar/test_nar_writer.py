"""NAR writer: byte-identical to ``nix-store --dump``, streaming, strict about missing data."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.fixtures.castore import (
    BLOB_B,
    DIRECTORY_COMPLICATED,
    DIRECTORY_WITH_KEEP,
    EMPTY_DIGEST,
    HELLOWORLD_BLOB,
)
from tests.fixtures.local_tree import make_tree, nix_dump, requires_nix
from tvixmount.castore import B3Digest, Directory, DirectoryNode, FileNode, SymlinkNode
from tvixmount.castore.blobservice import put_stream
from tvixmount.castore.ingest import ingest_path
from tvixmount.errors import IntegrityError, NotFoundError
from tvixmount.nar import calculate_nar, write_nar
from tvixmount.stores.memory.castore import MemoryBlobService, MemoryDirectoryService


@pytest.fixture
def blobs() -> MemoryBlobService:
    return MemoryBlobService()


@pytest.fixture
def directories() -> MemoryDirectoryService:
    return MemoryDirectoryService()


async def _nar(node: FileNode | DirectoryNode | SymlinkNode, blobs, directories) -> bytes:
    return b"".join([chunk async for chunk in write_nar(node, blobs, directories)])


@requires_nix
async def test_nar_of_a_tree_is_byte_identical_to_nix_store_dump(
    tmp_path: Path, blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    tree = make_tree(tmp_path / "tree")
    result = await ingest_path(tree, blobs, directories)
    assert await _nar(result.node, blobs, directories) == nix_dump(tree)


@requires_nix
async def test_nar_of_tvix_complicated_directory_matches_nix(
    tmp_path: Path, blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    # The same content on disk, archived by Nix, is the oracle.
    root = tmp_path / "complicated"
    (root / "keep").mkdir(parents=True)
    (root / "keep" / ".keep").write_bytes(b"")
    (root / ".keep").write_bytes(b"")
    os.symlink("/nix/store/somewhereelse", root / "aa")
    await put_stream(blobs, [b""])
    await directories.put_many([DIRECTORY_WITH_KEEP, DIRECTORY_COMPLICATED])
    node = DirectoryNode(b"x", DIRECTORY_COMPLICATED.digest(), DIRECTORY_COMPLICATED.size())
    assert await _nar(node, blobs, directories) == nix_dump(root)


@requires_nix
async def test_nar_of_an_executable_file_matches_nix(
    tmp_path: Path, blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    path = tmp_path / "hello"
    path.write_bytes(HELLOWORLD_BLOB)
    path.chmod(0o755)
    digest = await put_stream(blobs, [HELLOWORLD_BLOB])
    node = FileNode(b"hello", digest, len(HELLOWORLD_BLOB), executable=True)
    assert await _nar(node, blobs, directories) == nix_dump(path)


@requires_nix
async def test_nar_of_a_symlink_matches_nix(
    tmp_path: Path, blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    os.symlink("/nix/store/somewhereelse", tmp_path / "link")
    node = SymlinkNode(b"link", b"/nix/store/somewhereelse")
    assert await _nar(node, blobs, directories) == nix_dump(tmp_path / "link")


async def test_calculate_nar_gives_size_and_sha256_of_the_nar(
    blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    await put_stream(blobs, [b""])
    await directories.put_many([DIRECTORY_WITH_KEEP, DIRECTORY_COMPLICATED])
    node = DirectoryNode(b"x", DIRECTORY_COMPLICATED.digest(), DIRECTORY_COMPLICATED.size())
    nar = await _nar(node, blobs, directories)
    assert await calculate_nar(node, blobs, directories) == (len(nar), hashlib.sha256(nar).digest())


async def test_big_blob_is_streamed_in_bounded_chunks(
    blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    data = BLOB_B * 8  # about 8 MB
    digest = await put_stream(blobs, [data])
    sizes = [len(c) async for c in write_nar(FileNode(b"f", digest, len(data)), blobs, directories)]
    assert sum(sizes) > len(data)
    assert max(sizes) <= 1 << 20


async def test_missing_blob_is_not_found(
    blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    node = FileNode(b"f", B3Digest.of(b"never stored"), 12)
    with pytest.raises(NotFoundError, match="blob"):
        await _nar(node, blobs, directories)


async def test_missing_directory_is_not_found(
    blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    await directories.put_many([DIRECTORY_WITH_KEEP])
    node = DirectoryNode(b"d", DIRECTORY_COMPLICATED.digest(), DIRECTORY_COMPLICATED.size())
    with pytest.raises(NotFoundError, match="directory"):
        await _nar(node, blobs, directories)


async def test_missing_blob_below_a_directory_is_not_found(
    blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    await directories.put_many([DIRECTORY_WITH_KEEP])
    node = DirectoryNode(b"d", DIRECTORY_WITH_KEEP.digest(), DIRECTORY_WITH_KEEP.size())
    assert not await blobs.has(EMPTY_DIGEST)
    with pytest.raises(NotFoundError, match="blob"):
        await _nar(node, blobs, directories)


async def test_blob_shorter_than_its_node_is_an_integrity_error(
    blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    digest = await put_stream(blobs, [HELLOWORLD_BLOB])
    node = FileNode(b"f", digest, len(HELLOWORLD_BLOB) + 1)
    with pytest.raises(IntegrityError, match="bytes"):
        await _nar(node, blobs, directories)


async def test_empty_directory_archives_as_an_empty_directory(
    blobs: MemoryBlobService, directories: MemoryDirectoryService
) -> None:
    empty = Directory()
    await directories.put_many([empty])
    nar = await _nar(DirectoryNode(b"e", empty.digest(), 0), blobs, directories)
    assert nar.endswith(
        b"\x09\0\0\0\0\0\0\0directory\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0)\0\0\0\0\0\0\0"
    )

"""Local-tree ingestion into castore and ``import_path``, against real Nix."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from tests.fixtures.failing_blobs import FailingBlobs
from tests.fixtures.ingest_roundtrip import ingest_and_write_back
from tests.fixtures.local_tree import (
    BIG_FILE_SIZE,
    make_tree,
    nix_add,
    nix_dump,
    nix_hash_base32,
    requires_nix,
)
from tvixmount import nixbase32
from tvixmount.castore import EMPTY_DIGEST, B3Digest, Directory, DirectoryNode, FileNode
from tvixmount.castore.ingest import ingest_path
from tvixmount.errors import IngestError, StoreError, StorePathError
from tvixmount.importer import import_path
from tvixmount.pathinfo import CAHash
from tvixmount.stores import Store, open_store
from tvixmount.stores.memory.castore import MemoryBlobService, MemoryDirectoryService


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


@pytest.fixture
def store() -> Store:
    return open_store("memory://")


@requires_nix
async def test_import_gives_the_store_path_of_nix_store_add(tree: Path, store: Store) -> None:
    info = await import_path(store, tree)
    assert info.store_path.absolute == nix_add(tree)


@requires_nix
async def test_nar_hash_equals_nix_hash_of_the_tree(tree: Path, store: Store) -> None:
    result = await ingest_path(tree, store.blobs, store.directories)
    assert nixbase32.encode(result.nar_sha256) == nix_hash_base32(tree)


@requires_nix
async def test_nar_size_equals_length_of_nix_store_dump(tree: Path, store: Store) -> None:
    result = await ingest_path(tree, store.blobs, store.directories)
    assert result.nar_size == len(nix_dump(tree))


@requires_nix
@pytest.mark.parametrize("entry", ["hello.txt", "nested/run.sh", "relative-link", "empty-file"])
async def test_non_directory_root_matches_nix_store_add(
    tree: Path, store: Store, entry: str
) -> None:
    info = await import_path(store, tree / entry)
    assert info.store_path.absolute == nix_add(tree / entry)


@requires_nix
async def test_ingested_tree_writes_back_as_nix_store_dump(tree: Path, store: Store) -> None:
    assert await ingest_and_write_back(tree, store) == nix_dump(tree)


async def test_root_node_is_named_after_the_path(tree: Path, store: Store) -> None:
    result = await ingest_path(tree, store.blobs, store.directories)
    assert result.node.name == b"tree"


async def test_files_executables_and_symlinks_become_their_node_kinds(
    tree: Path, store: Store
) -> None:
    result = await ingest_path(tree / "nested", store.blobs, store.directories)
    assert isinstance(result.node, DirectoryNode)
    directory = await store.directories.get(result.node.digest)
    assert directory is not None
    by_name = {node.name: node for node in directory.entries()}
    assert by_name[b"run.sh"] == FileNode(
        b"run.sh", B3Digest.of(b"#!/bin/sh\necho hi\n"), 18, executable=True
    )
    assert isinstance(by_name[b"big.bin"], FileNode)
    assert by_name[b"big.bin"].size == BIG_FILE_SIZE
    assert not by_name[b"big.bin"].executable
    assert by_name[b"up-link"].target == b"../hello.txt"  # type: ignore[union-attr]


async def test_empty_file_and_empty_directory_have_the_empty_digests(
    tree: Path, store: Store
) -> None:
    result = await ingest_path(tree, store.blobs, store.directories)
    assert isinstance(result.node, DirectoryNode)
    root = await store.directories.get(result.node.digest)
    assert root is not None
    assert root.lookup(b"empty-file") == FileNode(b"empty-file", EMPTY_DIGEST, 0, False)
    assert root.lookup(b"empty-dir") == DirectoryNode(b"empty-dir", Directory().digest(), 0)


async def test_directory_sizes_follow_the_tvix_rule(tree: Path, store: Store) -> None:
    result = await ingest_path(tree / "nested", store.blobs, store.directories)
    # nested: a.txt big.bin deeper run.sh up-link (5) + deeper: deepest (1) + deepest: leaf (1)
    assert isinstance(result.node, DirectoryNode)
    assert result.node.size == 7


async def test_every_directory_of_the_tree_is_stored(tree: Path) -> None:
    blobs, directories = MemoryBlobService(), MemoryDirectoryService()
    await ingest_path(tree, blobs, directories)
    # root, nested, deeper, deepest; the empty directory
    assert len(directories.directories) == 5


async def test_import_records_a_content_addressed_path_info(tree: Path, store: Store) -> None:
    info = await import_path(store, tree)
    stored = await store.pathinfos.get(info.store_path.digest)
    assert stored == info
    assert info.node.name == str(info.store_path).encode()
    assert info.references == ()
    assert info.narinfo.ca is not None
    assert info.narinfo.ca.hash_type is CAHash.NAR_SHA256
    assert info.narinfo.ca.digest == info.narinfo.nar_sha256


async def test_import_uses_the_given_name(tree: Path, store: Store) -> None:
    info = await import_path(store, tree, name="renamed")
    assert info.store_path.name == "renamed"


async def test_import_reports_progress_adding_up_to_the_file_bytes(
    tree: Path, store: Store
) -> None:
    seen: list[int] = []
    await import_path(store, tree / "nested", progress=seen.append)
    assert sum(seen) == BIG_FILE_SIZE + 100 + 5 + 18


async def test_missing_path_is_an_ingest_error(tmp_path: Path, store: Store) -> None:
    with pytest.raises(IngestError, match="no such file"):
        await import_path(store, tmp_path / "absent")


def _bind_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


async def test_socket_is_rejected_naming_its_path(tree: Path, store: Store) -> None:
    with (
        _bind_socket(tree / "nested" / "deeper" / "sock"),
        pytest.raises(IngestError, match=r"nested/deeper/sock: cannot import a socket"),
    ):
        await import_path(store, tree)


async def test_fifo_is_rejected_naming_its_path(tree: Path, store: Store) -> None:
    os.mkfifo(tree / "nested" / "fifo")
    with pytest.raises(IngestError, match=r"nested/fifo: cannot import a FIFO"):
        await import_path(store, tree)


async def test_device_is_rejected_naming_its_path(tree: Path, store: Store) -> None:
    try:
        os.mknod(tree / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs root")
    with pytest.raises(IngestError, match=r"null: cannot import a character device"):
        await import_path(store, tree)


async def test_failed_import_stores_no_directory_and_no_path_info(tree: Path) -> None:
    store = open_store("memory://")
    os.mkfifo(tree / "nested" / "deeper" / "deepest" / "zz-fifo")
    with pytest.raises(IngestError):
        await import_path(store, tree)
    assert store.directories.directories == {}  # type: ignore[attr-defined]
    assert [info async for info in store.pathinfos.list()] == []


async def test_invalid_store_name_fails_before_reading(tree: Path, store: Store) -> None:
    os.mkfifo(tree / "fifo")  # would fail the walk: the name check must come first
    with pytest.raises(StorePathError, match="bad character"):
        await import_path(store, tree, name="has space")


@pytest.mark.parametrize("fail_at", [1, 3, 7])
async def test_blob_store_error_surfaces_as_itself_and_stores_no_directory(
    tree: Path, fail_at: int
) -> None:
    directories = MemoryDirectoryService()
    with pytest.raises(StoreError, match="refused"):
        await ingest_path(tree, FailingBlobs(fail_at), directories)
    assert directories.directories == {}


@requires_nix
async def test_wide_tree_of_many_small_files_matches_nix(tmp_path: Path, store: Store) -> None:
    # More entries than one walker batch and more files than blobs stored at once.
    wide = tmp_path / "wide"
    for i in range(2500):
        sub = wide / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:04d}").write_bytes(f"file {i}\n".encode() * (i % 50))
    assert await ingest_and_write_back(wide, store) == nix_dump(wide)

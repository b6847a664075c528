"""Shared by the reliability tests: stores of given files, kernel caches, corruption."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import trio

from tvixmount.castore.blobservice import put_stream
from tvixmount.castore.digest import B3Digest
from tvixmount.castore.nodes import FileNode, rename
from tvixmount.nar.writer import calculate_nar
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.storepath import from_nar_hash
from tvixmount.stores import Store, StoreOptions, open_store
from tvixmount.stores.local.store import open_local


async def put_file_path(store: Store, name: str, data: bytes) -> str:
    """Store ``data`` as a store path holding one file; returns its basename."""
    digest = await put_stream(store.blobs, [data])
    node = FileNode(b"file", digest, len(data), False)
    nar_size, nar_sha256 = await calculate_nar(node, store.blobs, store.directories)
    basename = str(from_nar_hash(nar_sha256, name))
    await store.pathinfos.put(
        PathInfo(rename(node, basename.encode()), (), NarInfo(nar_size, nar_sha256))
    )
    return basename


def make_file_store(path: Path, files: Mapping[str, bytes]) -> tuple[str, dict[str, str]]:
    """An embedded store with one store path per file; returns its URL and name -> basename."""

    async def build() -> dict[str, str]:
        store = open_store(str(path), StoreOptions(create=True))
        try:
            return {name: await put_file_path(store, name, data) for name, data in files.items()}
        finally:
            await store.aclose()

    return str(path), trio.run(build)


def drop_caches() -> None:
    """Make the kernel forget every unused inode and page (skips the test if not allowed)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        pytest.skip(f"cannot drop kernel caches: {exc}")


def flip_blob_bit(store: Path, digest: bytes, offset: int, mask: int = 0x01) -> None:
    """Corrupt one bit of a stored blob in an embedded store, as failing hardware would.

    The blob's bytes may lie in a file of their own or in a pack; ``offset``
    counts from the blob's first byte either way.
    """
    blobs, _, _, db = open_local(store, create=False)
    try:
        location = blobs.location_of(B3Digest(digest))
    finally:
        blobs.close()
        db.close()
    assert location is not None, f"blob {digest.hex()} is not stored in {store}"
    assert 0 <= offset < location.size
    location.path.chmod(0o644)
    with location.path.open("r+b") as f:
        byte = os.pread(f.fileno(), 1, location.offset + offset)
        os.pwrite(f.fileno(), bytes([byte[0] ^ mask]), location.offset + offset)

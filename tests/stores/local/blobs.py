"""Opening the embedded store and reading a blob back, for the local store's tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tvixmount.castore import B3Digest
from tvixmount.castore.blobservice import read_all
from tvixmount.stores.local.castore import LocalBlobService, LocalDirectoryService
from tvixmount.stores.local.store import open_local


@dataclass
class Opened:
    blobs: LocalBlobService
    directories: LocalDirectoryService
    db: sqlite3.Connection


@contextmanager
def opened(root: Path, create: bool = False) -> Iterator[Opened]:
    """The store's services, closed again on the way out."""
    blobs, directories, _, db = open_local(root, create)
    try:
        yield Opened(blobs, directories, db)
    finally:
        blobs.close()
        db.close()


async def read_blob(blobs: LocalBlobService, digest: B3Digest) -> bytes:
    """The blob's bytes, read through open_read; a test failure if it is absent."""
    reader = await blobs.open_read(digest)
    assert reader is not None, f"blob {digest} is absent"
    try:
        return await read_all(reader)
    finally:
        await reader.aclose()

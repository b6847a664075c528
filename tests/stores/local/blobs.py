"""Reading a blob back from the embedded store, for the local store's tests."""

from __future__ import annotations

from tvixmount.castore import B3Digest
from tvixmount.castore.blobservice import read_all
from tvixmount.stores.local.castore import LocalBlobService


async def read_blob(blobs: LocalBlobService, digest: B3Digest) -> bytes:
    """The blob's bytes, read through open_read; a test failure if it is absent."""
    reader = await blobs.open_read(digest)
    assert reader is not None, f"blob {digest} is absent"
    try:
        return await read_all(reader)
    finally:
        await reader.aclose()

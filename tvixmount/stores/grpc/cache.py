"""A local castore cache of a gRPC store (``--cache-dir``): verified content on disk.

Blobs and Directories fetched and verified from the server are kept in an
embedded store's castore (:mod:`tvixmount.stores.local`), as a binary cache
keeps what it fetched, so a second mount, or a file dropped from memory,
starts warm: read from disk (verified there as the embedded store verifies
its own) instead of over the network. PathInfos are not kept: the server
stays the authority on which store paths exist and what they are.

Writes happen in the background (system tasks) and never hold up the read
that fetched the content; the embedded store groups them into few syncs. A
failed write only means a later miss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import trio

from ...castore.blobservice import BlobReader, put_stream
from ...castore.digest import B3Digest
from ...castore.directory import Directory
from ...errors import IntegrityError
from ..local.castore import PACK_MAX
from ..local.store import open_local

log = logging.getLogger(__name__)


class LocalCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs, self.directories, _, self._db = open_local(root, create=True)

    async def blob(self, digest: B3Digest) -> BlobReader | None:
        """The cached blob, or ``None`` (also when the cached copy is corrupt)."""
        try:
            return await self.blobs.open_read(digest)
        except IntegrityError as exc:
            log.warning("cache %s: %s; fetching it again", self.root, exc)
            return None

    async def directory(self, digest: B3Digest) -> Directory | None:
        return await self.directories.get(digest)

    def keep_blob(self, digest: B3Digest, data: bytes) -> None:
        trio.lowlevel.spawn_system_task(self._put_blob, digest, data, name="cache a blob")

    def keep_directories(self, closure: Sequence[Directory]) -> None:
        """Keep a complete closure received root first."""
        trio.lowlevel.spawn_system_task(
            self._put_directories, list(reversed(closure)), name="cache directories"
        )

    async def _put_blob(self, digest: B3Digest, data: bytes) -> None:
        try:
            if len(data) <= PACK_MAX:
                await self.blobs.put_packed(digest, data)
            else:
                await put_stream(self.blobs, (data,))
        except Exception as exc:  # a cache write that fails is only a later miss
            log.debug("cache %s: cannot keep blob %s: %s", self.root, digest, exc)

    async def _put_directories(self, leaves_first: list[Directory]) -> None:
        try:
            await self.directories.put_many(leaves_first)
        except Exception as exc:
            log.debug("cache %s: cannot keep directories: %s", self.root, exc)

    def close(self) -> None:
        self.blobs.close()
        self._db.close()


__all__ = ["LocalCache"]

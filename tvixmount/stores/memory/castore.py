"""In-process blob and directory services (``memory://``), for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import blake3

from ...castore.digest import B3Digest
from ...castore.directory import Directory
from ...castore.directoryservice import check_closure, walk_breadth_first
from ...errors import IntegrityError


class MemoryBlobReader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    @property
    def size(self) -> int:
        return len(self._view)

    async def pread(self, offset: int, length: int) -> memoryview:
        return self._view[offset : offset + length]

    async def aclose(self) -> None:
        self._view.release()


class MemoryBlobWriter:
    def __init__(self, service: MemoryBlobService) -> None:
        self._service = service
        self._parts: list[bytes] = []
        self._hasher = blake3.blake3()

    async def write(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self._parts.append(bytes(data))

    async def finish(self) -> B3Digest:
        digest = B3Digest(self._hasher.digest())
        self._service.blobs.setdefault(digest, b"".join(self._parts))
        self._parts = []
        return digest

    async def abort(self) -> None:
        self._parts = []


class MemoryBlobService:
    def __init__(self) -> None:
        self.blobs: dict[B3Digest, bytes] = {}

    async def has(self, digest: B3Digest) -> bool:
        return digest in self.blobs

    async def open_read(self, digest: B3Digest) -> MemoryBlobReader | None:
        data = self.blobs.get(digest)
        if data is None:
            return None
        # Tests tamper with self.blobs directly; never hand out unverified bytes.
        if B3Digest.of(data) != digest:
            raise IntegrityError(f"blob {digest} does not match its digest")
        return MemoryBlobReader(data)

    async def open_write(self) -> MemoryBlobWriter:
        return MemoryBlobWriter(self)

    async def chunks(self, digest: B3Digest) -> list[tuple[B3Digest, int]] | None:
        return [] if digest in self.blobs else None

    async def aclose(self) -> None:
        pass


class MemoryDirectoryService:
    def __init__(self) -> None:
        self.directories: dict[B3Digest, Directory] = {}

    async def get(self, digest: B3Digest) -> Directory | None:
        return self.directories.get(digest)

    def get_recursive(self, root: B3Digest) -> AsyncIterator[Directory]:
        return walk_breadth_first(self.get, root)

    async def put_many(self, directories: Sequence[Directory]) -> B3Digest:
        batch = check_closure(directories, self.directories.get)
        self.directories.update(batch)
        return directories[-1].digest()

    async def aclose(self) -> None:
        pass

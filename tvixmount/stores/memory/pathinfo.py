"""In-process PathInfoService (``memory://``), for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ...pathinfo.model import PathInfo


class MemoryPathInfoService:
    def __init__(self) -> None:
        self.infos: dict[bytes, PathInfo] = {}

    async def get(self, digest: bytes) -> PathInfo | None:
        return self.infos.get(digest)

    async def put(self, info: PathInfo) -> PathInfo:
        store_path = info.validate()
        self.infos[store_path.digest] = info
        return info

    async def list(self) -> AsyncIterator[PathInfo]:
        for info in list(self.infos.values()):
            yield info

    async def aclose(self) -> None:
        pass

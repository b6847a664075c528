"""The PathInfoService seam: store path digest -> PathInfo.

Contract: ``get`` takes the 20-byte store path digest and returns ``None``
when the path is absent (backend failures raise
:class:`~tvixmount.errors.StoreError`); ``put`` validates
(:meth:`PathInfo.validate`) before storing; ``list`` yields every PathInfo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from .model import PathInfo


class PathInfoService(Protocol):
    async def get(self, digest: bytes) -> PathInfo | None: ...

    async def put(self, info: PathInfo) -> PathInfo: ...

    def list(self) -> AsyncIterator[PathInfo]: ...

    async def aclose(self) -> None: ...

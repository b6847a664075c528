"""A least-recently-used map of byte strings, bounded by their total length.

Caches of immutable content (verified blobs and chunks, packed directory
listings) are keyed by digest and hold bytes whose size varies by orders of
magnitude, so they are bounded by bytes, not by entries.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class ByteLRU(Generic[K]):
    """Values up to ``max_bytes`` in total; the least recently used go first.

    A value larger than the whole bound is not kept (it would evict everything
    and then itself). Content is immutable, so a key already present keeps its
    value.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[K, bytes] = OrderedDict()
        self._bytes = 0

    def get(self, key: K) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: K, data: bytes) -> None:
        if len(data) > self.max_bytes or key in self._items:
            return
        self._items[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= len(evicted)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def total_bytes(self) -> int:
        return self._bytes

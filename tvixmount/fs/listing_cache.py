"""A bounded cache of decoded directory listings, keyed by Directory digest.

A listing belongs to its directory inode and goes when the kernel forgets
that inode. After the kernel drops its caches (memory pressure, or
``drop_caches``), the next walk would fetch and decode every Directory again;
this cache keeps the most recently used listings across that, bounded by the
total number of entries they hold, so memory stays bounded too.
"""

from __future__ import annotations

from collections import OrderedDict

from ..castore.digest import B3Digest
from .inodes import Listing

DEFAULT_MAX_ENTRIES = 50_000


class ListingCache:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._entries = 0
        self._listings: OrderedDict[B3Digest, Listing] = OrderedDict()

    def get(self, digest: B3Digest) -> Listing | None:
        listing = self._listings.get(digest)
        if listing is not None:
            self._listings.move_to_end(digest)
        return listing

    def put(self, digest: B3Digest, listing: Listing) -> None:
        if digest in self._listings or len(listing.entries) > self._max_entries:
            return
        self._listings[digest] = listing
        self._entries += len(listing.entries)
        while self._entries > self._max_entries:
            _, evicted = self._listings.popitem(last=False)
            self._entries -= len(evicted.entries)

    def __len__(self) -> int:
        return len(self._listings)

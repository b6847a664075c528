"""The bounded cache of decoded listings (by Directory digest)."""

from __future__ import annotations

from tvixmount.castore import B3Digest, Directory, FileNode
from tvixmount.fs.inodes import Listing
from tvixmount.fs.listing_cache import ListingCache


def _listing(entries: int, seed: int) -> tuple[B3Digest, Listing]:
    directory = Directory.from_nodes(
        FileNode(f"f{i}".encode(), B3Digest.of(f"{seed}-{i}".encode()), 1) for i in range(entries)
    )
    return directory.digest(), Listing.of(directory)


def test_a_cached_listing_is_returned_by_digest() -> None:
    cache = ListingCache(max_entries=10)
    digest, listing = _listing(3, 0)
    cache.put(digest, listing)
    assert cache.get(digest) is listing
    assert cache.get(_listing(3, 1)[0]) is None


def test_least_recently_used_listings_go_first_when_entries_exceed_the_bound() -> None:
    cache = ListingCache(max_entries=10)
    (a, la), (b, lb), (c, lc) = (_listing(4, i) for i in range(3))
    cache.put(a, la)
    cache.put(b, lb)
    assert cache.get(a) is la  # a is now more recent than b
    cache.put(c, lc)  # 12 entries > 10: b goes
    assert cache.get(b) is None
    assert cache.get(a) is la
    assert cache.get(c) is lc


def test_a_listing_bigger_than_the_bound_is_not_cached() -> None:
    cache = ListingCache(max_entries=5)
    digest, listing = _listing(6, 0)
    cache.put(digest, listing)
    assert cache.get(digest) is None
    assert len(cache) == 0

"""The bounded cache of Directory bytes (by Directory digest)."""

from __future__ import annotations

from tvixmount.castore import B3Digest, Directory, FileNode
from tvixmount.fs.listing_cache import ListingCache


def _directory(entries: int, seed: int) -> tuple[B3Digest, bytes]:
    directory = Directory.from_nodes(
        FileNode(f"f{i}".encode(), B3Digest.of(f"{seed}-{i}".encode()), 1) for i in range(entries)
    )
    return directory.digest(), directory.serialize()


def test_cached_bytes_are_returned_by_digest() -> None:
    cache = ListingCache(max_bytes=1000)
    digest, data = _directory(3, 0)
    cache.put(digest, data)
    assert cache.get(digest) is data
    assert cache.get(_directory(3, 1)[0]) is None


def test_least_recently_used_directories_go_first_when_bytes_exceed_the_bound() -> None:
    (a, da), (b, db), (c, dc) = (_directory(4, i) for i in range(3))
    assert len(da) == len(db) == len(dc)
    cache = ListingCache(max_bytes=2 * len(da) + len(da) // 2)
    cache.put(a, da)
    cache.put(b, db)
    assert cache.get(a) is da  # a is now more recent than b
    cache.put(c, dc)  # three would exceed the bound: b goes
    assert cache.get(b) is None
    assert cache.get(a) is da
    assert cache.get(c) is dc
    assert len(cache) == 2


def test_a_directory_bigger_than_the_bound_is_not_cached() -> None:
    digest, data = _directory(6, 0)
    cache = ListingCache(max_bytes=len(data) - 1)
    cache.put(digest, data)
    assert cache.get(digest) is None
    assert len(cache) == 0

"""The bounded cache of packed directory listings (by Directory digest)."""

from __future__ import annotations

from tvixmount.castore import B3Digest, Directory, DirectoryNode, FileNode, SymlinkNode
from tvixmount.fs.inodes import Listing
from tvixmount.fs.listing_cache import ListingCache, pack


def _listing(entries: int, seed: int) -> tuple[B3Digest, Listing]:
    directory = Directory.from_nodes(
        FileNode(f"f{i}".encode(), B3Digest.of(f"{seed}-{i}".encode()), 1) for i in range(entries)
    )
    return directory.digest(), Listing.of(directory)


def test_a_cached_listing_comes_back_equal_with_every_kind_of_entry() -> None:
    directory = Directory.from_nodes(
        [
            DirectoryNode(b"sub", B3Digest.of(b"sub"), 7),
            FileNode(b"plain", B3Digest.of(b"plain"), 1 << 40),
            FileNode(b"tool", B3Digest.of(b"tool"), 0, executable=True),
            SymlinkNode(b"link", b"../sub/plain"),
        ]
    )
    listing = Listing.of(directory)
    cache = ListingCache()
    cache.put(directory.digest(), listing)
    cached = cache.get(directory.digest())
    assert cached == listing
    assert cached is not None and cached is not listing
    assert [type(node) for node in cached.entries] == [type(node) for node in listing.entries]
    assert [node.name for node in cached.entries] == [b"link", b"plain", b"sub", b"tool"]
    assert cached.by_name[b"tool"] == FileNode(b"tool", B3Digest.of(b"tool"), 0, True)
    digest = cached.by_name[b"sub"].digest  # type: ignore[union-attr]
    assert isinstance(digest, B3Digest) and str(digest) == str(B3Digest.of(b"sub"))
    assert cache.get(_listing(3, 1)[0]) is None


def test_least_recently_used_listings_go_first_when_bytes_exceed_the_bound() -> None:
    (a, la), (b, lb), (c, lc) = (_listing(4, i) for i in range(3))
    size = len(pack(la))
    assert len(pack(lb)) == len(pack(lc)) == size
    cache = ListingCache(max_bytes=2 * size + size // 2)
    cache.put(a, la)
    cache.put(b, lb)
    assert cache.get(a) == la  # a is now more recent than b
    cache.put(c, lc)  # three would exceed the bound: b goes
    assert cache.get(b) is None
    assert cache.get(a) == la
    assert cache.get(c) == lc
    assert len(cache) == 2


def test_a_listing_bigger_than_the_bound_is_not_cached() -> None:
    digest, listing = _listing(6, 0)
    cache = ListingCache(max_bytes=len(pack(listing)) - 1)
    cache.put(digest, listing)
    assert cache.get(digest) is None
    assert len(cache) == 0

"""The byte-bounded LRU shared by the content caches."""

from __future__ import annotations

from tvixmount.lru import ByteLRU


def test_the_least_recently_used_values_go_first_once_bytes_exceed_the_bound() -> None:
    cache: ByteLRU[str] = ByteLRU(10)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # a is now more recent than b
    cache.put("c", b"cccc")
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (b"aaaa", b"cccc")
    assert len(cache) == 2 and cache.total_bytes == 8


def test_a_value_larger_than_the_bound_is_not_kept_and_evicts_nothing() -> None:
    cache: ByteLRU[int] = ByteLRU(4)
    cache.put(1, b"1234")
    cache.put(2, b"12345")
    assert 2 not in cache and cache.get(1) == b"1234"


def test_a_key_already_present_keeps_its_value() -> None:
    cache: ByteLRU[int] = ByteLRU(100)
    cache.put(1, b"first")
    cache.put(1, b"second, longer")
    assert cache.get(1) == b"first" and cache.total_bytes == 5

"""Many NAR fetches at once from one binary cache, as a mount's prefetch and lookups make them.

Each decompressing NAR holds a worker thread while it waits for the file's
next chunk, which another worker thread reads. When both came from one
limiter of 16, 16 fetches at once (``run --prefetch 16``, or 8 prefetches
and 8 lookups) held every token and waited forever. The guard below is a
hang guard, not a timing assertion.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.nixcache import (
    NixCache,
    assert_served_as_nix_wrote,
    build_cache,
    digest_of,
    opened,
    requires_nix,
    serve_directory,
)

pytestmark = requires_nix

_PATHS = 24  # more than any of the fetch thread limiters hold
_HANG = 120  # seconds: far beyond what 24 small NARs take on a loaded machine


@pytest.fixture(scope="module")
def zstd_cache(tmp_path_factory: pytest.TempPathFactory) -> NixCache:
    return build_cache(
        tmp_path_factory.mktemp("concurrency"), "zstd", trees=_PATHS, with_reference=False
    )


@pytest.fixture(params=["file", "http"])
def cache_url(request: pytest.FixtureRequest, zstd_cache: NixCache) -> Iterator[str]:
    if request.param == "file":
        yield zstd_cache.url
        return
    with serve_directory(zstd_cache.dir) as served:
        yield served.url


async def test_many_nar_fetches_at_once_all_complete(
    zstd_cache: NixCache, cache_url: str, tmp_path: Path
) -> None:
    async with opened(cache_url, tmp_path / "local") as store:
        with trio.fail_after(_HANG):
            async with trio.open_nursery() as nursery:
                for path in zstd_cache.paths:
                    nursery.start_soon(store.pathinfos.get, digest_of(path))
        for path in zstd_cache.paths:
            await assert_served_as_nix_wrote(store, zstd_cache, path)

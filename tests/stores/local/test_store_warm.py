"""A mount starts reading the embedded store's database into the page cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.fixtures.cachestat import PAGE, cached_pages, page_count, require_uncached
from tests.mounting import make_fixture_store, mounted, requires_fuse
from tests.reliability import drop_caches
from tvixmount.stores.local import store as localstore
from tvixmount.stores.local.store import warm_index

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="drop_caches needs root")


def _cold(db: Path) -> int:
    """Drop the page cache; the database's page count (skips where it stays cached)."""
    drop_caches()
    require_uncached(db, 0, db.stat().st_size)
    return page_count(db.stat().st_size)


def _all_cached_soon(db: Path, pages: int) -> bool:
    deadline = time.monotonic() + 10
    while cached_pages(db, 0, pages * PAGE) != pages:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_warm_index_reads_the_whole_database_ahead(tmp_path: Path) -> None:
    store = Path(make_fixture_store(tmp_path / "store"))
    db = store / "store.sqlite"
    pages = _cold(db)
    warm_index(store)
    assert _all_cached_soon(db, pages)


def test_a_database_bigger_than_the_limit_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Path(make_fixture_store(tmp_path / "store"))
    db = store / "store.sqlite"
    pages = _cold(db)
    monkeypatch.setattr(localstore, "WARM_MAX", db.stat().st_size - 1)
    warm_index(store)
    time.sleep(0.2)
    assert cached_pages(db, 0, pages * PAGE) == 0


def test_warm_index_of_a_directory_without_a_database_does_nothing(tmp_path: Path) -> None:
    warm_index(tmp_path)  # no error: best effort


@requires_fuse
def test_a_mount_warms_its_store_database(tmp_path: Path) -> None:
    store = Path(make_fixture_store(tmp_path / "store"))
    db = store / "store.sqlite"
    pages = _cold(db)
    with mounted(str(store), tmp_path / "mnt"):
        assert _all_cached_soon(db, pages)

"""A mount starts reading the embedded store's database into the page cache."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pytest

from tests.fixtures.cachestat import cached_pages
from tests.mounting import make_fixture_store, mounted, requires_fuse
from tests.reliability import drop_caches
from tvixmount import localstore
from tvixmount.localstore import warm_index

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="drop_caches needs root"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="cachestat(2) number is x86_64's"),
]

PAGE = os.sysconf("SC_PAGE_SIZE")


def _cold(db: Path) -> int:
    """Drop the page cache; the database's page count (skips where it stays cached)."""
    drop_caches()
    cached = cached_pages(db, 0, db.stat().st_size)
    if cached is None:
        pytest.skip("needs cachestat(2) (Linux 6.5+)")
    if cached:
        pytest.skip(f"{db.parent} keeps its pages cached (tmpfs?): nothing to warm")
    return -(-db.stat().st_size // PAGE)


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

"""Store URLs -> services: the grammar of DESIGN.md and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tvixmount.errors import StoreError, StoreURLError
from tvixmount.stores import OPENERS, StoreOptions, check_store_url, open_store, scheme_of
from tvixmount.stores.local.castore import LocalBlobService
from tvixmount.stores.local.pathinfo import LocalPathInfoService
from tvixmount.stores.local.store import MARKER
from tvixmount.stores.memory.castore import MemoryBlobService, MemoryDirectoryService
from tvixmount.stores.memory.pathinfo import MemoryPathInfoService


def test_unknown_scheme_is_a_store_url_error() -> None:
    with pytest.raises(StoreURLError, match="unknown store URL scheme 'ftp'"):
        open_store("ftp://example.org/cache")


def test_unknown_scheme_error_lists_every_known_scheme() -> None:
    with pytest.raises(StoreURLError) as info:
        check_store_url("ftp://host/cache")
    message = str(info.value)
    assert "a directory path" in message
    for scheme in OPENERS:
        assert f"{scheme}://" in message


def test_store_url_error_is_a_store_error() -> None:
    assert issubclass(StoreURLError, StoreError)


def test_check_store_url_accepts_known_forms() -> None:
    for url in ["memory://", "/some/dir", "relative/dir", *(f"{s}://x" for s in OPENERS)]:
        check_store_url(url)


def test_scheme_of_a_directory_path_is_empty() -> None:
    assert scheme_of("/var/lib/tvixmount") == ""
    assert scheme_of("memory://") == "memory"


async def test_memory_url_gives_fresh_in_process_services() -> None:
    store = open_store("memory://")
    try:
        assert isinstance(store.blobs, MemoryBlobService)
        assert isinstance(store.directories, MemoryDirectoryService)
        assert isinstance(store.pathinfos, MemoryPathInfoService)
        assert store.url == "memory://"
    finally:
        await store.aclose()


async def test_memory_stores_are_independent() -> None:
    first, second = open_store("memory://"), open_store("memory://")
    try:
        assert first.blobs is not second.blobs
    finally:
        await first.aclose()
        await second.aclose()


async def test_directory_path_gives_the_local_store(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s"), StoreOptions(create=True))
    try:
        assert isinstance(store.blobs, LocalBlobService)
        assert isinstance(store.pathinfos, LocalPathInfoService)
        assert (tmp_path / "s" / MARKER).is_file()
    finally:
        await store.aclose()


def test_missing_directory_without_create_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no tvixmount store"):
        open_store(str(tmp_path / "missing"))


async def test_default_url_is_the_embedded_store_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TVIXMOUNT_STORE", str(tmp_path / "env-store"))
    store = open_store(None, StoreOptions(create=True))
    try:
        assert store.url == str(tmp_path / "env-store")
        assert isinstance(store.blobs, LocalBlobService)
    finally:
        await store.aclose()


async def test_only_local_and_memory_stores_answer_inline(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "nix-cache-info").write_text("StoreDir: /nix/store\n")
    opened = [
        open_store("memory://"),
        open_store(str(tmp_path / "s"), StoreOptions(create=True)),
        open_store(f"file://{cache}", StoreOptions(cache_dir=tmp_path / "c")),
    ]
    try:
        assert [store.inline for store in opened] == [True, True, False]
    finally:
        for store in opened:
            await store.aclose()

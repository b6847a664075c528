"""The binary-cache PathInfoService over ``file://`` caches that real Nix wrote."""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

from tests.nixcache import (
    ABSENT,
    COMPRESSIONS,
    NixCache,
    assert_served_as_nix_wrote,
    build_cache,
    cached_paths,
    digest_of,
    generate_key,
    hanging_server,
    narinfo_name,
    opened,
    requires_nix,
    serve_directory,
)
from tvixmount import nixbase32
from tvixmount.errors import IntegrityError, StoreError, StoreURLError
from tvixmount.stores import Store, StoreOptions, open_store
from tvixmount.stores.binarycache.service import BinaryCachePathInfoService
from tvixmount.stores.binarycache.url import CacheURL, default_cache_dir

pytestmark = requires_nix


@pytest.fixture(scope="module")
def signed_caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NixCache]:
    """One signed cache per compression Nix can write, each with fresh paths."""
    workdir = tmp_path_factory.mktemp("signed")
    key = generate_key(workdir, "tvixmount-test-1")
    return {c: build_cache(workdir / c, c, key=key) for c in COMPRESSIONS}


@pytest.fixture
def cache(tmp_path: Path) -> NixCache:
    """An unsigned xz cache of two trees and a path referring to the first, ours to damage."""
    return build_cache(tmp_path / "nix", "none", trees=2)


async def assert_rejected(
    cache: NixCache,
    cache_dir: Path,
    bad: str,
    match: str,
    caplog: pytest.LogCaptureFixture,
    keys: tuple[str, ...] = (),
    error: type[Exception] = IntegrityError,
) -> None:
    """``bad`` fails with a logged error, is not recorded, and the others are still served."""
    async with opened(cache.url, cache_dir, keys, require_sigs=bool(keys)) as store:
        with caplog.at_level(logging.DEBUG), pytest.raises(error, match=match):
            await store.pathinfos.get(digest_of(bad))
        assert any(
            "lookup of " + bad.split("/")[-1][:32] + " failed" in r.getMessage()
            for r in caplog.records
        ), "no log line naming the path"
        assert bad.split("/")[-1] not in await cached_paths(store)
        for good in cache.paths:
            if good != bad:
                await assert_served_as_nix_wrote(store, cache, good)


def truncate_file_and_hide_it(cache: NixCache, store_path: str) -> None:
    """Cut the path's file in half and drop FileHash/FileSize, so only later checks can tell."""
    nar = cache.nar_file(store_path)
    nar.write_bytes(nar.read_bytes()[: nar.stat().st_size // 2])
    text = cache.narinfo_file(store_path).read_text()
    kept = [line for line in text.splitlines() if not line.startswith(("FileHash", "FileSize"))]
    cache.rewrite_narinfo(store_path, "\n".join(kept) + "\n")


# -- Nix-written caches ---------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
async def test_every_path_of_a_nix_cache_is_served_with_its_nar_hash(
    signed_caches: dict[str, NixCache], compression: str, tmp_path: Path
):
    cache = signed_caches[compression]
    assert cache.key is not None
    async with opened(cache.url, tmp_path / "local", [cache.key.public]) as store:
        for path in cache.paths:
            await assert_served_as_nix_wrote(store, cache, path)


async def test_fetched_paths_are_listed_from_the_local_cache(
    signed_caches: dict[str, NixCache], tmp_path: Path
):
    cache = signed_caches["zstd"]
    assert cache.key is not None
    async with opened(cache.url, tmp_path / "local", [cache.key.public]) as store:
        assert await cached_paths(store) == []
        await store.pathinfos.get(digest_of(cache.paths[0]))
        assert await cached_paths(store) == [cache.paths[0].removeprefix("/nix/store/")]


async def test_absent_path_is_none(signed_caches: dict[str, NixCache], tmp_path: Path):
    async with opened(signed_caches["xz"].url, tmp_path / "local") as store:
        assert await store.pathinfos.get(digest_of(ABSENT)) is None


def empty_but_its_cache_info(cache: NixCache) -> None:
    for entry in cache.dir.iterdir():
        if entry.name != "nix-cache-info":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


async def test_cached_path_is_served_by_a_new_instance_without_its_files(
    cache: NixCache, tmp_path: Path
):
    path = cache.paths[0]
    async with opened(cache.url, tmp_path / "local", require_sigs=False) as store:
        await assert_served_as_nix_wrote(store, cache, path)
    empty_but_its_cache_info(cache)
    async with opened(cache.url, tmp_path / "local", require_sigs=False) as store:
        await assert_served_as_nix_wrote(store, cache, path)


def test_vanished_cache_is_an_error_when_opened(cache: NixCache, tmp_path: Path):
    shutil.rmtree(cache.dir)
    with pytest.raises(StoreError, match="not a Nix binary cache"):
        open_store(cache.url, StoreOptions(cache_dir=tmp_path / "local"))
    assert not (tmp_path / "local").exists()


def test_cache_for_another_store_dir_is_an_error_when_opened(cache: NixCache, tmp_path: Path):
    (cache.dir / "nix-cache-info").write_text("StoreDir: /gnu/store\n")
    with pytest.raises(StoreError, match="/gnu/store"):
        open_store(cache.url, StoreOptions(cache_dir=tmp_path / "local"))


async def test_put_is_refused(signed_caches: dict[str, NixCache], tmp_path: Path):
    cache = signed_caches["none"]
    assert cache.key is not None
    async with opened(cache.url, tmp_path / "a", [cache.key.public]) as source:
        info = await source.pathinfos.get(digest_of(cache.paths[0]))
    assert info is not None
    async with opened(cache.url, tmp_path / "b") as store:
        with pytest.raises(StoreError, match="only reads"):
            await store.pathinfos.put(info)


# -- signatures -----------------------------------------------------------------------------


async def test_trusted_key_as_url_parameter_is_used(
    signed_caches: dict[str, NixCache], tmp_path: Path
):
    cache = signed_caches["xz"]
    assert cache.key is not None
    url = f"{cache.url}?trusted-public-keys={quote(cache.key.public, safe='')}"
    async with opened(url, tmp_path / "local") as store:
        assert isinstance(store.pathinfos, BinaryCachePathInfoService)
        await assert_served_as_nix_wrote(store, cache, cache.paths[0])


async def test_url_parameter_keys_merge_with_option_keys(
    signed_caches: dict[str, NixCache], tmp_path: Path
):
    cache = signed_caches["xz"]
    assert cache.key is not None
    other = generate_key(tmp_path, "other-1")
    url = f"{cache.url}?trusted-public-keys={quote(other.public, safe='')}"
    async with opened(url, tmp_path / "local", [cache.key.public]) as store:
        await assert_served_as_nix_wrote(store, cache, cache.paths[0])


async def assert_refused(
    store: Store, store_path: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The path is absent, with a warning naming it and why, and nothing is recorded."""
    with caplog.at_level(logging.WARNING):
        assert await store.pathinfos.get(digest_of(store_path)) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(store_path in w and reason in w for w in warnings), warnings
    assert store_path.removeprefix("/nix/store/") not in await cached_paths(store)


async def test_signature_by_an_untrusted_key_is_refused(
    signed_caches: dict[str, NixCache], tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    cache = build_cache(tmp_path / "nix", "xz", key=generate_key(tmp_path, "tvixmount-test-1"))
    cache.strip_content_addresses()
    other = generate_key(tmp_path, "other-1")
    async with opened(cache.url, tmp_path / "local", [other.public]) as store:
        await assert_refused(store, cache.paths[0], "signed by tvixmount-test-1", caplog)


async def test_tampered_signed_narinfo_is_refused_and_others_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    key = generate_key(tmp_path, "k-1")
    cache = build_cache(tmp_path / "nix", "xz", key=key, trees=2, content_addressed=False)
    bad = cache.paths[0]
    text = cache.narinfo_file(bad).read_text()
    size = cache.narinfos[bad].nar_size
    cache.rewrite_narinfo(bad, text.replace(f"NarSize: {size}\n", f"NarSize: {size + 8}\n"))
    async with opened(cache.url, tmp_path / "local", [key.public]) as store:
        await assert_refused(store, bad, "no valid signature", caplog)
        for good in cache.paths[1:]:
            await assert_served_as_nix_wrote(store, cache, good)


async def test_path_cached_without_keys_needs_a_trusted_signature_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    key = generate_key(tmp_path, "k-1")
    cache = build_cache(tmp_path / "nix", "xz", key=key, trees=1, content_addressed=False)
    path = cache.paths[0]
    async with opened(cache.url, tmp_path / "local", require_sigs=False) as store:
        await assert_served_as_nix_wrote(store, cache, path)
    other = generate_key(tmp_path, "other-1")
    async with opened(cache.url, tmp_path / "local", [other.public]) as store:
        assert await store.pathinfos.get(digest_of(path)) is None
    empty_but_its_cache_info(cache)
    async with opened(cache.url, tmp_path / "local", [key.public]) as store:
        await assert_served_as_nix_wrote(store, cache, path)


async def test_unsigned_narinfo_is_refused_when_keys_are_given(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    key = generate_key(tmp_path, "k-1")
    cache.strip_content_addresses()
    async with opened(cache.url, tmp_path / "local", [key.public]) as store:
        await assert_refused(store, cache.paths[0], "is not signed", caplog)


async def test_unsigned_is_accepted_with_one_warning_when_sigs_are_not_required(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING):
        async with opened(cache.url, tmp_path / "local", require_sigs=False) as store:
            for path in cache.paths:
                await assert_served_as_nix_wrote(store, cache, path)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "signatures are not required (--no-require-sigs)" in warnings[0].getMessage()


# -- bad input ------------------------------------------------------------------------------


async def test_nar_not_matching_nar_hash_is_rejected(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bad = cache.paths[0]
    wrong = "sha256:" + nixbase32.encode(hashlib.sha256(b"something else").digest())
    text = cache.narinfo_file(bad).read_text()
    right = f"NarHash: {cache.narinfos[bad].nar_hash_text}"
    cache.rewrite_narinfo(bad, text.replace(right, f"NarHash: {wrong}"))
    await assert_rejected(cache, tmp_path / "local", bad, "but NarHash says", caplog)


async def test_nar_file_not_matching_file_hash_is_rejected(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bad = cache.paths[0]
    nar = cache.nar_file(bad)
    data = bytearray(nar.read_bytes())
    data[-20] ^= 0xFF  # inside the last file's contents: still a well-formed NAR
    nar.write_bytes(bytes(data))
    await assert_rejected(cache, tmp_path / "local", bad, "does not match FileHash", caplog)


async def test_truncated_nar_is_rejected(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bad = cache.paths[0]
    truncate_file_and_hide_it(cache, bad)
    await assert_rejected(cache, tmp_path / "local", bad, "NarSize says", caplog)


async def test_truncated_compressed_file_is_rejected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    cache = build_cache(tmp_path / "nix", "xz", trees=2)
    bad = cache.paths[0]
    truncate_file_and_hide_it(cache, bad)
    await assert_rejected(cache, tmp_path / "local", bad, "cannot decompress", caplog)


async def test_narinfo_for_another_store_path_is_rejected(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bad, other = cache.paths[0], cache.paths[1]
    cache.rewrite_narinfo(bad, cache.narinfo_file(other).read_text())
    await assert_rejected(cache, tmp_path / "local", bad, "describes /nix/store/", caplog)


async def test_malformed_narinfo_line_is_rejected(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bad = cache.paths[0]
    cache.rewrite_narinfo(bad, cache.narinfo_file(bad).read_text() + "this line is garbage\n")
    await assert_rejected(cache, tmp_path / "local", bad, "line 10: expected", caplog)


async def test_missing_nar_file_is_rejected(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bad = cache.paths[0]
    cache.nar_file(bad).unlink()
    await assert_rejected(cache, tmp_path / "local", bad, "missing", caplog)


async def test_nar_url_outside_the_cache_is_rejected(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bad = cache.paths[0]
    text = cache.narinfo_file(bad).read_text()
    cache.rewrite_narinfo(bad, text.replace(cache.narinfos[bad].url, "../../etc/passwd"))
    await assert_rejected(cache, tmp_path / "local", bad, "outside the cache", caplog)


async def test_unknown_compression_is_rejected(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bad = cache.paths[0]
    text = cache.narinfo_file(bad).read_text()
    cache.rewrite_narinfo(bad, text.replace("Compression: none", "Compression: lz4"))
    await assert_rejected(cache, tmp_path / "local", bad, "unsupported Compression", caplog)


# -- concurrency and hangs ------------------------------------------------------------------


def test_hanging_server_fails_to_open_within_its_timeout(tmp_path: Path):
    with hanging_server() as url, pytest.raises(StoreError, match="no answer within 1s"):
        open_store(f"{url}?timeout=1&retries=0", StoreOptions(cache_dir=tmp_path / "local"))


async def test_cached_path_is_served_while_another_fetch_hangs(cache: NixCache, tmp_path: Path):
    local = tmp_path / "local"
    async with opened(cache.url, local, require_sigs=False) as store:
        await store.pathinfos.get(digest_of(cache.paths[0]))
    with serve_directory(cache.dir) as served:
        gate = served.hold[narinfo_name(ABSENT)] = threading.Event()
        async with opened(f"{served.url}?timeout=5&retries=0", local, require_sigs=False) as store:
            outcome: list[BaseException] = []

            async def hang() -> None:
                try:
                    await store.pathinfos.get(digest_of(ABSENT))
                except StoreError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hang)
                await trio.sleep(0.2)
                started = time.monotonic()
                await assert_served_as_nix_wrote(store, cache, cache.paths[0])
                assert time.monotonic() - started < 2
            assert outcome, "the hanging fetch should have failed"
        gate.set()


# -- opening --------------------------------------------------------------------------------


def test_default_cache_dir_is_under_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = CacheURL.parse("https://cache.example.org/?timeout=3")
    assert default_cache_dir(cache).parent == tmp_path / "xdg" / "tvixmount"
    assert default_cache_dir(cache) == default_cache_dir(
        CacheURL.parse("https://cache.example.org")
    )


async def test_opening_creates_the_default_local_cache(
    monkeypatch: pytest.MonkeyPatch, cache: NixCache, tmp_path: Path
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    store = open_store(cache.url, StoreOptions(require_sigs=False))
    try:
        await assert_served_as_nix_wrote(store, cache, cache.paths[0])
    finally:
        await store.aclose()
    (local,) = (tmp_path / "xdg" / "tvixmount").iterdir()
    assert (local / "tvixmount-store").exists()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file://relative/dir", "file:///ABSOLUTE/DIR"),
        ("http:///no-host", "no host"),
        ("https://h/?timeout=soon", "not a number"),
        ("https://h/?retries=-1", "out of range"),
    ],
)
def test_bad_cache_url_is_a_clear_error(url: str, reason: str):
    with pytest.raises(StoreURLError, match=reason):
        CacheURL.parse(url)

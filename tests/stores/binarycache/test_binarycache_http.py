"""The binary-cache PathInfoService over loopback HTTP (python's http.server)."""

from __future__ import annotations

import base64
import logging
import socket
import threading
from collections import Counter
from pathlib import Path

import pytest
import trio

from tests.nixcache import (
    ABSENT,
    NixCache,
    assert_served_as_nix_wrote,
    build_cache,
    cached_paths,
    digest_of,
    generate_key,
    narinfo_name,
    opened,
    requires_nix,
    serve_directory,
)
from tvixmount.errors import IntegrityError, StoreError
from tvixmount.stores import StoreOptions, open_store
from tvixmount.stores.binarycache.transport import fetch, open_transport
from tvixmount.stores.binarycache.url import BEARER_TOKEN_ENV, CacheURL

pytestmark = requires_nix


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> NixCache:
    workdir = tmp_path_factory.mktemp("http")
    key = generate_key(workdir, "http-test-1")
    return build_cache(workdir, "xz", key=key, trees=2)


def keys(cache: NixCache) -> list[str]:
    assert cache.key is not None
    return [cache.key.public]


async def test_every_path_is_served_over_http(cache: NixCache, tmp_path: Path):
    assert cache.key is not None
    with serve_directory(cache.dir) as served:
        async with opened(served.url, tmp_path / "local", [cache.key.public]) as store:
            for path in cache.paths:
                await assert_served_as_nix_wrote(store, cache, path)


async def test_404_means_absent(cache: NixCache, tmp_path: Path):
    with serve_directory(cache.dir) as served:
        async with opened(served.url, tmp_path / "local") as store:
            assert await store.pathinfos.get(digest_of(ABSENT)) is None
        assert served.requests[narinfo_name(ABSENT)] == 1


async def test_concurrent_gets_of_one_path_fetch_once(cache: NixCache, tmp_path: Path):
    path = cache.paths[0]
    results = []
    with serve_directory(cache.dir) as served:
        async with opened(served.url, tmp_path / "local", keys(cache)) as store:

            async def get() -> None:
                results.append(await store.pathinfos.get(digest_of(path)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(get)
                nursery.start_soon(get)
        assert served.requests[narinfo_name(path)] == 1
        assert served.requests[cache.narinfos[path].url] == 1
    assert len(results) == 2 and results[0] == results[1] is not None


async def test_concurrent_gets_share_one_failure(cache: NixCache, tmp_path: Path):
    path = cache.paths[0]
    errors: list[Exception] = []
    with serve_directory(cache.dir) as served:
        served.fail_next[narinfo_name(path)] = 100
        async with opened(f"{served.url}?retries=0", tmp_path / "local", keys(cache)) as store:

            async def get() -> None:
                try:
                    await store.pathinfos.get(digest_of(path))
                except StoreError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(get)
                nursery.start_soon(get)
        assert served.requests[narinfo_name(path)] == 1
    assert len(errors) == 2


async def test_fetch_goes_on_when_its_caller_gives_up(cache: NixCache, tmp_path: Path):
    path = cache.paths[0]
    nar_url = cache.narinfos[path].url
    with serve_directory(cache.dir) as served:
        served.hold[nar_url] = threading.Event()
        async with opened(served.url, tmp_path / "local", keys(cache)) as store:
            with trio.move_on_after(0.5) as deadline:
                await store.pathinfos.get(digest_of(path))
            assert deadline.cancelled_caught
            served.hold[nar_url].set()
            await assert_served_as_nix_wrote(store, cache, path)
        assert served.requests[nar_url] == 1


async def test_server_errors_are_retried(cache: NixCache, tmp_path: Path):
    path = cache.paths[0]
    with serve_directory(cache.dir) as served:
        served.fail_next[cache.narinfos[path].url] = 2
        async with opened(f"{served.url}?retries=3", tmp_path / "local", keys(cache)) as store:
            await assert_served_as_nix_wrote(store, cache, path)
        assert served.requests[cache.narinfos[path].url] == 3


async def test_persistent_server_errors_give_up_after_the_retries(
    cache: NixCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    path = cache.paths[0]
    with serve_directory(cache.dir) as served:
        served.fail_next[narinfo_name(path)] = 100
        async with opened(f"{served.url}?retries=1", tmp_path / "local", keys(cache)) as store:
            with caplog.at_level(logging.DEBUG), pytest.raises(StoreError, match="503"):
                await store.pathinfos.get(digest_of(path))
            assert await cached_paths(store) == []
            await assert_served_as_nix_wrote(store, cache, cache.paths[1])
        assert served.requests[narinfo_name(path)] == 2
    assert "gave up after 2 attempts" in caplog.text


def test_refused_connection_is_an_error_when_opened(tmp_path: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}?retries=0"
    with pytest.raises(StoreError, match="cannot connect"):
        open_store(url, StoreOptions(cache_dir=tmp_path / "local"))


async def test_bearer_token_from_url_parameter_is_sent(cache: NixCache, tmp_path: Path):
    with serve_directory(cache.dir) as served:
        async with opened(f"{served.url}?bearer-token=s3cret", tmp_path / "local") as store:
            await store.pathinfos.get(digest_of(ABSENT))
    assert served.headers[-1]["Authorization"] == "Bearer s3cret"


async def test_bearer_token_from_environment_is_sent(
    cache: NixCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(BEARER_TOKEN_ENV, "from-env")
    with serve_directory(cache.dir) as served:
        async with opened(served.url, tmp_path / "local") as store:
            await store.pathinfos.get(digest_of(ABSENT))
    assert served.headers[-1]["Authorization"] == "Bearer from-env"


async def test_netrc_credentials_are_sent(
    cache: NixCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password wonderland\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.delenv(BEARER_TOKEN_ENV, raising=False)
    with serve_directory(cache.dir) as served:
        async with opened(served.url, tmp_path / "local") as store:
            await store.pathinfos.get(digest_of(ABSENT))
    expected = "Basic " + base64.b64encode(b"alice:wonderland").decode()
    assert served.headers[-1]["Authorization"] == expected


async def test_no_credentials_are_sent_unless_configured(
    cache: NixCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    monkeypatch.delenv(BEARER_TOKEN_ENV, raising=False)
    with serve_directory(cache.dir) as served:
        async with opened(served.url, tmp_path / "local") as store:
            await store.pathinfos.get(digest_of(ABSENT))
    assert "Authorization" not in served.headers[-1]


async def test_cached_path_is_served_without_any_request(cache: NixCache, tmp_path: Path):
    path = cache.paths[0]
    with serve_directory(cache.dir) as served:
        async with opened(served.url, tmp_path / "local", keys(cache)) as store:
            await store.pathinfos.get(digest_of(path))
        before = served.requests.copy()
        async with opened(served.url, tmp_path / "local", keys(cache)) as store:
            await assert_served_as_nix_wrote(store, cache, path)
        # Opening asks for nix-cache-info; the path itself costs no request.
        assert served.requests - before == Counter({"nix-cache-info": 1})


async def test_netrc_file_from_nix_conf_is_used(
    cache: NixCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    netrc = tmp_path / "nix-netrc"
    netrc.write_text("machine 127.0.0.1 login bob password builder\n")
    netrc.chmod(0o600)
    conf_dir = tmp_path / "etc-nix"
    conf_dir.mkdir()
    (conf_dir / "nix.conf").write_text(f"netrc-file = {netrc}\nrequire-sigs = false\n")
    monkeypatch.setenv("NIX_CONF_DIR", str(conf_dir))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "none"))
    monkeypatch.delenv("NIX_CONFIG", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.delenv(BEARER_TOKEN_ENV, raising=False)
    with serve_directory(cache.dir) as served:
        store = open_store(served.url, StoreOptions(cache_dir=tmp_path / "local"))
        try:
            await assert_served_as_nix_wrote(store, cache, cache.paths[0])
        finally:
            await store.aclose()
    expected = "Basic " + base64.b64encode(b"bob:builder").decode()
    assert all(headers["Authorization"] == expected for headers in served.headers)


@pytest.mark.parametrize("over_http", [False, True])
async def test_transport_tells_present_from_absent_keys(
    cache: NixCache, tmp_path: Path, over_http: bool
):
    path = cache.paths[0]
    with serve_directory(cache.dir) as served:
        url = served.url if over_http else cache.url
        transport = open_transport(CacheURL.parse(url))
        try:
            assert await transport.exists("nix-cache-info")
            assert await transport.exists(narinfo_name(path))
            assert not await transport.exists(narinfo_name(ABSENT))
            assert await fetch(transport, narinfo_name(path), 1 << 20) == (
                cache.narinfo_file(path).read_bytes()
            )
            with pytest.raises(IntegrityError, match="larger than 10 bytes"):
                await fetch(transport, narinfo_name(path), 10)
        finally:
            await transport.aclose()

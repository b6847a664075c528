"""gRPC store URLs, timeouts and error mapping of the shared transport."""

from __future__ import annotations

import time

import pytest

from tests.grpc_serving import FakeBackend, fake_server
from tvixmount.errors import StoreError, StoreURLError
from tvixmount.stores import check_store_url, open_store
from tvixmount.stores.grpc.transport import CallPolicy, parse_grpc_url


def test_http_url_names_host_and_port_with_default_policy() -> None:
    assert parse_grpc_url("grpc+http://127.0.0.1:8000") == ("127.0.0.1:8000", CallPolicy())


def test_ipv6_host_keeps_its_brackets() -> None:
    assert parse_grpc_url("grpc+http://[::1]:8000")[0] == "[::1]:8000"


def test_unix_url_names_the_socket_path() -> None:
    assert parse_grpc_url("grpc+unix:///run/tvix/store.sock")[0] == "unix:/run/tvix/store.sock"


def test_query_sets_timeout_and_retries() -> None:
    _, policy = parse_grpc_url("grpc+http://localhost:1?timeout=2.5&retries=0")
    assert (policy.timeout, policy.retries) == (2.5, 0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("grpc+http://localhost", "needs a host and port"),
        ("grpc+http://localhost:99999", "invalid port"),
        ("grpc+http://localhost:1/path", "must not have a path"),
        ("grpc+unix://relative.sock", "absolute socket path"),
        ("grpc+http://localhost:1?timeout=0", "invalid timeout"),
        ("grpc+http://localhost:1?retries=many", "invalid retries"),
        ("grpc+http://localhost:1?speed=fast", "unknown parameter 'speed'"),
    ],
)
def test_malformed_url_is_a_store_url_error(url: str, message: str) -> None:
    with pytest.raises(StoreURLError, match=message):
        open_store(url)


@pytest.mark.parametrize("url", ["grpc+http://localhost:8000", "grpc+unix:///tmp/s.sock"])
def test_grpc_schemes_are_known_store_urls(url: str) -> None:
    check_store_url(url)


async def test_call_slower_than_the_timeout_fails_after_bounded_retries() -> None:
    with fake_server(FakeBackend(pathinfo_delay=1.0)) as url:
        store = open_store(f"{url}?timeout=0.2&retries=1")
        try:
            start = time.monotonic()
            with pytest.raises(StoreError, match=r"did not answer within 0.2s \(2 attempts\)"):
                await store.pathinfos.get(bytes(20))
            assert time.monotonic() - start < 1.0
        finally:
            await store.aclose()

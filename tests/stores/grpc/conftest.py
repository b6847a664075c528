"""Fixtures shared by the gRPC tests: a dict-backed server, and a client of a store URL.

``client`` opens whatever ``url`` a module gives: here the in-process fake
server's; a module serving ``tvixmount serve`` overrides ``url`` with its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.grpc_serving import FakeBackend, fake_server
from tvixmount.stores import Store, open_store


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def url(backend: FakeBackend) -> Iterator[str]:
    with fake_server(backend) as server_url:
        yield server_url


@pytest.fixture
async def client(url: str) -> AsyncIterator[Store]:
    store = open_store(url)
    try:
        yield store
    finally:
        await store.aclose()

"""A server that goes away and comes back: calls fail with StoreError while it is
down and succeed after, through the same client."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.grpc_serving import serving, stop
from tests.mounting import make_fixture_store, run_tvixmount, tvixmount_command
from tvixmount.castore import B3Digest
from tvixmount.castore.blobservice import put_stream
from tvixmount.errors import StoreError
from tvixmount.storepath import StorePath
from tvixmount.stores import StoreOptions, open_store
from tvixmount.stores.grpc.server import SYNTHETIC_CHUNK_BYTES


@pytest.fixture
def store_dir(tmp_path: Path) -> str:
    return make_fixture_store(tmp_path / "store")


async def test_calls_fail_while_the_server_is_down_and_succeed_after_restart(
    store_dir: str, tmp_path: Path
) -> None:
    digest = StorePath.from_basename(fx.ROOT_BLOB_A).digest
    with serving(store_dir, tmp_path / "serve.log") as first:
        url, listen = f"{first.url}?timeout=5", f"127.0.0.1:{first.port}"
        client = open_store(url)
        try:
            assert await client.pathinfos.get(digest) is not None
            stop(first.process)
            with pytest.raises(StoreError, match="unreachable"):
                await client.pathinfos.get(digest)
            with serving(store_dir, tmp_path / "serve.log", listen=listen):
                info = await client.pathinfos.get(digest)
                assert info is not None and info.node == fx.ROOT_NODES[0]
        finally:
            await client.aclose()


async def test_open_chunked_reader_keeps_working_across_a_restart(tmp_path: Path) -> None:
    """The restarted server forgot its chunk index; the reader re-Stats and goes on."""
    store_dir = str(tmp_path / "store")
    data = bytes(range(251)) * (3 * SYNTHETIC_CHUNK_BYTES // 251)
    local = open_store(store_dir, StoreOptions(create=True))
    try:
        await put_stream(local.blobs, [data])
    finally:
        await local.aclose()
    with serving(store_dir, tmp_path / "serve.log") as first:
        listen = f"127.0.0.1:{first.port}"
        client = open_store(first.url)
        try:
            reader = await client.blobs.open_read(B3Digest.of(data))
            assert reader is not None
            assert bytes(await reader.pread(0, 10)) == data[:10]
            stop(first.process)
            with serving(store_dir, tmp_path / "serve.log", listen=listen):
                end = len(data) - 10
                assert bytes(await reader.pread(end, 10)) == data[end:]
        finally:
            await client.aclose()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_exits_zero_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    with serving("memory://", tmp_path / "serve.log") as served:
        assert stop(served.process, sig) == 0


def test_serve_on_an_address_in_use_fails_with_one_line(tmp_path: Path) -> None:
    with serving("memory://", tmp_path / "serve.log") as served:
        result = run_tvixmount(
            "serve", "--listen", f"127.0.0.1:{served.port}", "--store", "memory://", timeout=30
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("tvixmount: error: cannot listen on")


def test_serve_with_a_malformed_listen_address_fails_with_one_line() -> None:
    result = run_tvixmount("serve", "--listen", "nonsense", "--store", "memory://", timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "tvixmount: error: cannot listen on 'nonsense': expected HOST:PORT or unix:///PATH"
    )


def test_serve_prints_its_address_once_ready(tmp_path: Path) -> None:
    process = subprocess.Popen(
        tvixmount_command("serve", "--listen", "127.0.0.1:0", "--store", "memory://"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("tvixmount: serving memory:// at grpc+http://127.0.0.1:")
    finally:
        stop(process)

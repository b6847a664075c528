"""``tvixmount serve --http`` on the embedded store: a serving process per further CPU.

The workers are the real CLI's child processes; what is checked is what an
operator sees: they answer alongside the server, and none outlives it,
whether it is stopped (SIGTERM) or killed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import trio

from tests.mounting import run_tvixmount
from tests.nixcache import make_tree, narinfo_name, requires_nix
from tests.stores.binarycache.test_serve_http import serving_http
from tvixmount.stores.binarycache.server.workers import Workers

pytestmark = [
    requires_nix,
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: no workers"),
]


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
        return [int(child) for child in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _wait_children(pid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 15
    while len(children := _children(pid)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return children


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    workdir = tmp_path_factory.mktemp("serve-http-workers")
    trees = [make_tree(workdir / f"tree-{i}", os.urandom(8).hex()) for i in range(8)]
    store = workdir / "store"
    done = run_tvixmount("import", *trees, "--store", store)
    assert done.returncode == 0, done.stderr
    return store, done.stdout.split()


def test_workers_answer_beside_the_server(imported: tuple[Path, list[str]], tmp_path: Path) -> None:
    store, paths = imported
    workers = len(os.sched_getaffinity(0)) - 1
    with serving_http(tmp_path, "--store", store) as served:
        assert len(_wait_children(served.process.pid, workers)) == workers

        def fetch_all(_: int) -> list[int]:
            with httpx.Client(base_url=served.url) as client:
                return [client.get(f"/{narinfo_name(path)}").status_code for path in paths * 4]

        with ThreadPoolExecutor(16) as pool:
            statuses = [status for batch in pool.map(fetch_all, range(32)) for status in batch]
        assert statuses == [200] * (32 * 4 * len(paths))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_server_stops_its_workers(
    imported: tuple[Path, list[str]], tmp_path: Path, sig: int
) -> None:
    store, _ = imported
    with serving_http(tmp_path, "--store", store) as served:
        workers = _wait_children(served.process.pid, 1)
        served.process.send_signal(sig)
        assert served.process.wait(30) == 0
        assert _wait_gone(workers) == []
        assert "HTTP worker" not in served.log()


def test_workers_die_with_a_killed_server(imported: tuple[Path, list[str]], tmp_path: Path) -> None:
    store, _ = imported
    with serving_http(tmp_path, "--store", store) as served:
        workers = _wait_children(served.process.pid, 1)
        assert workers
        served.process.kill()
        served.process.wait()
        # PR_SET_PDEATHSIG: SIGTERM from the kernel, then their own graceful stop.
        assert _wait_gone(workers) == []


def test_a_memory_store_has_no_workers(tmp_path: Path) -> None:
    with serving_http(tmp_path, "--store", "memory://") as served:
        assert httpx.get(f"{served.url}/nix-cache-info").status_code == 200
        assert _children(served.process.pid) == []


def test_a_worker_that_exited_early_does_not_break_the_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            workers = Workers([sys.executable, "-c", "pass"], sock, 1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(workers.run)
                with trio.fail_after(30):
                    while "exited with status 0" not in caplog.text:
                        await trio.sleep(0.05)
                # Reaped by now: stopping must not look its pid up again.
                workers.stop()

    with caplog.at_level(logging.ERROR):
        trio.run(main)

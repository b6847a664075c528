"""Closure prefetch (pathinfo/prefetch.py) over a real binary cache served on loopback HTTP.

The closure, written by ``nix copy``: ``top`` refers to ``mid``, ``t1`` and
``t2``; ``mid`` refers to ``t0``. The HTTP server counts every request, so
"fetched without being looked up" and "never fetched twice" are read off
what the cache was asked.
"""

from __future__ import annotations

import os
import pty
import secrets
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.grpc_serving import serving
from tests.mounting import read_until, tvixmount_command
from tests.nixcache import (
    NIX_FLAGS,
    Served,
    SigningKey,
    digest_of,
    generate_key,
    make_tree,
    nix_add,
    opened,
    requires_nix,
    serve_directory,
)
from tests.testing.test_plugin import STORE_SPEC
from tvixmount.pathinfo.prefetch import ClosurePrefetcher
from tvixmount.testing.mounts import mounted

pytestmark = requires_nix
requires_run = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="tvixmount run needs root"
)


@dataclass(frozen=True)
class Closure:
    dir: Path
    key: SigningKey
    paths: dict[str, str]  # top, mid, t0, t1, t2 -> absolute store path

    def narinfo(self, name: str) -> str:
        return f"{self.paths[name].removeprefix('/nix/store/')[:32]}.narinfo"

    def run(self, url: str, cache_dir: Path, script: str, *flags: str) -> list[str]:
        """``tvixmount [FLAGS] run`` of ``sh -c SCRIPT`` over the cache at ``url``."""
        return tvixmount_command(
            *flags,
            "run",
            "--store",
            url,
            "--trusted-public-key",
            self.key.public,
            "--cache-dir",
            cache_dir,
            "--",
            "sh",
            "-c",
            script,
        )


def _referring_to(name: str, dependencies: list[str], salt: str) -> str:
    uses = " ".join(f"${{builtins.storePath {d}}}" for d in dependencies)
    expression = f'builtins.toFile "{name}-{salt}" "{salt} uses {uses}"'
    done = subprocess.run(
        ["nix-instantiate", "--eval", "--read-write-mode", "-E", expression],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().strip('"')


@pytest.fixture(scope="module")
def closure(tmp_path_factory: pytest.TempPathFactory) -> Closure:
    workdir = tmp_path_factory.mktemp("prefetch")
    salt = secrets.token_hex(6)
    paths = {f"t{i}": nix_add(make_tree(workdir / f"t{i}-{salt}", f"{salt}-{i}")) for i in range(3)}
    paths["mid"] = _referring_to("mid", [paths["t0"]], salt)
    paths["top"] = _referring_to("top", [paths["mid"], paths["t1"], paths["t2"]], salt)
    key = generate_key(workdir, f"prefetch-{salt}")
    cache = workdir / "cache"
    subprocess.run(
        [
            "nix",
            *NIX_FLAGS,
            "copy",
            "--to",
            f"file://{cache}?compression=zstd&secret-key={key.secret_file}",
            paths["top"],
        ],
        check=True,
        capture_output=True,
    )
    return Closure(cache, key, paths)


@asynccontextmanager
async def prefetching(
    closure: Closure, served: Served, cache_dir: Path, parallel: int
) -> AsyncIterator[ClosurePrefetcher]:
    """The cache's PathInfos behind a prefetcher that runs for the block's duration."""
    async with opened(served.url, cache_dir, [closure.key.public]) as store:
        prefetcher = ClosurePrefetcher(store.pathinfos, parallel)
        async with trio.open_nursery() as nursery:
            await nursery.start(prefetcher.run)
            yield prefetcher
            nursery.cancel_scope.cancel()


async def settled(prefetcher: ClosurePrefetcher) -> None:
    with trio.fail_after(60):
        while prefetcher.stats.busy:
            await trio.sleep(0.01)


async def test_the_first_lookup_fetches_the_whole_closure(closure: Closure, tmp_path: Path) -> None:
    with serve_directory(closure.dir) as served:
        async with prefetching(closure, served, tmp_path / "local", 2) as prefetcher:
            top = await prefetcher.get(digest_of(closure.paths["top"]))
            assert top is not None
            await settled(prefetcher)
            # Reached without any lookup, t0 through mid: every path fetched once.
            for name in ("mid", "t0", "t1", "t2"):
                assert served.requests[closure.narinfo(name)] == 1, name
            assert (prefetcher.stats.fetched, prefetcher.stats.failed) == (4, 0)
            store_paths = sorted(closure.paths.values())
            assert sorted([i.store_path.absolute async for i in prefetcher.list()]) == store_paths
            # The lookups that follow are answered without asking the cache again.
            asked = sum(served.requests.values())
            for name in ("mid", "t0", "t1", "t2"):
                info = await prefetcher.get(digest_of(closure.paths[name]))
                assert info is not None and info.store_path.absolute == closure.paths[name]
            assert sum(served.requests.values()) == asked


async def test_a_lookup_joins_the_prefetch_in_flight(closure: Closure, tmp_path: Path) -> None:
    with serve_directory(closure.dir) as served:
        gate = served.hold[closure.narinfo("t1")] = threading.Event()
        async with prefetching(closure, served, tmp_path / "local", 8) as prefetcher:
            await prefetcher.get(digest_of(closure.paths["top"]))
            with trio.fail_after(60):
                while served.requests[closure.narinfo("t1")] == 0:
                    await trio.sleep(0.01)
            answers = []

            async def look_up() -> None:
                answers.append(await prefetcher.get(digest_of(closure.paths["t1"])))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(look_up)
                await trio.sleep(0.2)  # the lookup is waiting now; the answer is held
                gate.set()
            assert answers[0] is not None and answers[0].store_path.absolute == closure.paths["t1"]
            await settled(prefetcher)
            assert served.requests[closure.narinfo("t1")] == 1


async def test_at_most_parallel_prefetches_run_at_once(closure: Closure, tmp_path: Path) -> None:
    with serve_directory(closure.dir) as served:
        gates = {name: threading.Event() for name in ("mid", "t1", "t2")}
        for name, gate in gates.items():
            served.hold[closure.narinfo(name)] = gate
        async with prefetching(closure, served, tmp_path / "local", 2) as prefetcher:
            await prefetcher.get(digest_of(closure.paths["top"]))
            with trio.fail_after(60):
                while sum(served.requests[closure.narinfo(n)] for n in gates) < 2:
                    await trio.sleep(0.01)
            assert prefetcher.stats.running == 2
            assert prefetcher.stats.scheduled == 3
            for gate in gates.values():
                gate.set()
            await settled(prefetcher)
            assert prefetcher.stats.fetched == 4
            assert all(served.requests[closure.narinfo(n)] == 1 for n in gates)


def test_without_run_the_layer_only_passes_lookups_through(
    closure: Closure, tmp_path: Path
) -> None:
    async def main() -> None:
        with serve_directory(closure.dir) as served:
            async with opened(served.url, tmp_path / "local", [closure.key.public]) as store:
                prefetcher = ClosurePrefetcher(store.pathinfos, 4)
                assert await prefetcher.get(digest_of(closure.paths["top"])) is not None
                assert served.requests[closure.narinfo("mid")] == 0

    trio.run(main)


@requires_run
def test_run_prefetches_and_logs_with_v(closure: Closure, tmp_path: Path) -> None:
    with serve_directory(closure.dir) as served:
        script = f"cat {closure.paths['top']} && cat {closure.paths['t0']}/hello.txt"
        argv = closure.run(served.url, tmp_path / "local", script, "-v")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("Hello World!\n")
    assert f"prefetch: {closure.paths['mid'].removeprefix('/nix/store/')}" in done.stderr
    # Looked up by the command or prefetched, or both: never asked for twice.
    assert all(served.requests[closure.narinfo(name)] <= 1 for name in closure.paths)
    assert served.requests[closure.narinfo("t0")] == 1


@requires_run
def test_run_shows_a_progress_bar_on_a_terminal(closure: Closure, tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    with serve_directory(closure.dir) as served:
        gate = served.hold[closure.narinfo("t1")] = threading.Event()
        script = f"cat {closure.paths['top']} > /dev/null && read line"
        argv = closure.run(served.url, tmp_path / "local", script)
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=terminal)
        os.close(terminal)
        try:
            # t1's narinfo is held, so the prefetch is under way until released.
            screen = read_until(controller, b"fetching closure")
            assert b"paths" in screen
        finally:
            gate.set()
            assert process.stdin is not None
            process.stdin.write(b"\n")
            process.stdin.close()
            status = process.wait(timeout=60)
            os.close(controller)
    assert status == 0


@requires_run
def test_run_over_a_grpc_store_prefetches_references(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(STORE_SPEC)
    store = tmp_path / "store"
    built = subprocess.run(
        tvixmount_command("fixture", "build", tmp_path / "spec.toml", "--store", store),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    lib, hello = sorted(built, key=lambda path: "hello" in path)
    with serving(str(store), tmp_path / "serve.log") as served:
        done = subprocess.run(
            tvixmount_command("-v", "run", "--store", served.url, "--", f"{hello}/bin/hello"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello, fixture!\n"
    lib_name, hello_name = (path.removeprefix("/nix/store/") for path in (lib, hello))
    assert f"prefetch: {lib_name} (a reference of {hello_name})" in done.stderr


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="mounting needs /dev/fuse")
def test_a_mount_of_a_remote_store_prefetches_too(closure: Closure, tmp_path: Path) -> None:
    with serve_directory(closure.dir) as served:
        extra = ("--trusted-public-key", closure.key.public, "--cache-dir", tmp_path / "local")
        with mounted(served.url, tmp_path / "mnt", *extra) as mount:
            top = closure.paths["top"].removeprefix("/nix/store/")
            assert (mount / top).read_text().startswith(closure.paths["top"][-12:])
            deadline = time.monotonic() + 60
            rest = [closure.narinfo(name) for name in ("mid", "t0", "t1", "t2")]
            while not all(served.requests[n] for n in rest) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [served.requests[n] for n in rest] == [1, 1, 1, 1]


@requires_run
def test_run_prefetches_the_paths_its_command_names_before_any_lookup(
    closure: Closure, tmp_path: Path
) -> None:
    with serve_directory(closure.dir) as served:
        argv = closure.run(served.url, tmp_path / "local", "read line")
        environment = {**os.environ, "input": closure.paths["mid"]}
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, env=environment)
        try:
            # The command only waits on its stdin: mid and t0 come by the hint alone.
            deadline = time.monotonic() + 60
            wanted = [closure.narinfo("mid"), closure.narinfo("t0")]
            while not all(served.requests[n] for n in wanted) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [served.requests[n] for n in wanted] == [1, 1]
            assert served.requests[closure.narinfo("top")] == 0
        finally:
            assert process.stdin is not None
            process.stdin.write(b"\n")
            process.stdin.close()
            assert process.wait(timeout=60) == 0

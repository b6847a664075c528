"""``tvixmount ls`` on a store of 10,000 store paths: the library call and the CLI.

Usage: ``.venv/bin/python -m bench.ls_bench [--paths N] [--runs R]``

PathInfos are written straight into a fresh embedded store (a third files, a
third directories sharing one small Directory, a third symlinks), then:

- ``list_store`` (the library listing: every PathInfo read, parsed,
  validated and sorted) is timed in-process;
- ``tvixmount ls`` (plain, piped) and ``tvixmount ls --json`` are timed end
  to end as subprocesses, next to ``tvixmount --help`` for the interpreter
  and import start-up they include.

Figures are min and median over the runs, in milliseconds, of wall time and
of CPU time (process plus children).
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

from tvixmount.castore import B3Digest, Directory, DirectoryNode, FileNode, SymlinkNode
from tvixmount.castore.nodes import Node
from tvixmount.listing import list_store
from tvixmount.pathinfo import NarInfo, PathInfo
from tvixmount.storepath import from_nar_hash
from tvixmount.stores import StoreOptions, open_store
from tvixmount.testing.mounts import tvixmount_command


async def populate(store_dir: Path, paths: int) -> None:
    store = open_store(str(store_dir), StoreOptions(create=True))
    try:
        shared = Directory.from_nodes([FileNode(b"file", B3Digest.of(b"x"), 1)])
        await store.directories.put_many([shared])
        for i in range(paths):
            nar_sha256 = hashlib.sha256(f"ls-bench-{i}".encode()).digest()
            name = str(from_nar_hash(nar_sha256, f"bench-{i}")).encode()
            node: Node
            if i % 3 == 0:
                node = FileNode(name, B3Digest.of(name), i, i % 2 == 0)
            elif i % 3 == 1:
                node = DirectoryNode(name, shared.digest(), shared.size())
            else:
                node = SymlinkNode(name, b"/nix/store/somewhere-" + str(i).encode())
            await store.pathinfos.put(PathInfo(node, (), NarInfo(1000 + i, nar_sha256)))
    finally:
        await store.aclose()


async def library_listing(store_dir: Path) -> int:
    store = open_store(str(store_dir))
    try:
        return len(await list_store(store))
    finally:
        await store.aclose()


def _cpu() -> float:
    """CPU seconds of this process and its finished children (load on the machine
    stretches wall time; CPU time shows the work itself)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(runs: int, action: Callable[[], object]) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each run."""
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), _cpu()
        action()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((_cpu() - start_cpu) * 1000)
    return wall, cpu


def cli(*args: str) -> Callable[[], object]:
    command = tvixmount_command(*args)

    def run() -> object:
        return subprocess.run(command, stdout=subprocess.DEVNULL, check=True)

    return run


def report(label: str, times: tuple[list[float], list[float]]) -> None:
    wall, cpu = times
    print(
        f"{label:<40} wall min {min(wall):7.1f} median {statistics.median(wall):7.1f} ms"
        f" | cpu min {min(cpu):7.1f} median {statistics.median(cpu):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tvixmount-ls-bench-") as tmp:
        store_dir = Path(tmp) / "store"
        start = time.perf_counter()
        trio.run(populate, store_dir, args.paths)
        print(f"store of {args.paths} store paths written in {time.perf_counter() - start:.1f} s")
        listed = trio.run(library_listing, store_dir)
        assert listed == args.paths, f"listed {listed} of {args.paths} paths"
        report(
            "library: list_store (open, list, close)",
            timed(args.runs, lambda: trio.run(library_listing, store_dir)),
        )
        report("cli: tvixmount --help (start-up only)", timed(args.runs, cli("--help")))
        report(
            "cli: tvixmount ls (plain, piped)",
            timed(args.runs, cli("ls", "--store", str(store_dir))),
        )
        report(
            "cli: tvixmount ls -l --json",
            timed(args.runs, cli("ls", "--store", str(store_dir), "-l", "--json")),
        )


if __name__ == "__main__":
    main()

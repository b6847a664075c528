"""Many readers at once get correct bytes; racing lookups allocate one inode.

(Linux, as measured here, sends the daemon one lookup at a time per
directory, and concurrent lookups of one name as a single request, so the
real-mount race tests check the outcome the kernel hands out; the daemon's
own race, lookups interleaving at every await, is in test_fs_operations.)

16 readers (8 threads in this process, 8 processes) read for
``TVIXMOUNT_CONCURRENCY_SECONDS`` (default 60) the same and different files,
including a multi-MB blob at random offsets, every byte checked against the
source; each read drops the file's pages first, so it reaches the daemon.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.grpc_serving import FakeBackend, fake_server
from tests.mounting import Mount, mounted, requires_fuse
from tests.reliability import make_file_store
from tests.reliability_reader import Tally, read_and_check
from tvixmount.castore.digest import B3Digest
from tvixmount.castore.nodes import FileNode
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.storepath import StorePath

pytestmark = requires_fuse

SECONDS = float(os.environ.get("TVIXMOUNT_CONCURRENCY_SECONDS", "60"))
THREADS = 8
PROCESSES = 8
BIG = "big"
SIZES = {BIG: 6 << 20, "empty": 0, "one": 1, "page": 4096, "odd": 65_537, "medium": 300_001}
_REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Mount, list[tuple[str, str]]]]:
    """The files mounted, as (mounted path, source path) pairs; the big one first."""
    base = tmp_path_factory.mktemp("concurrency")
    rng = random.Random(16)
    contents = {name: rng.randbytes(size) for name, size in SIZES.items()}
    store, basenames = make_file_store(base / "store", contents)
    (base / "sources").mkdir()
    for name, data in contents.items():
        (base / "sources" / name).write_bytes(data)
    with mounted(store, base / "mnt") as mnt:
        yield mnt, [(str(mnt / basenames[name]), str(base / "sources" / name)) for name in SIZES]


def test_sixteen_readers_for_a_minute_get_every_byte_right(
    files: tuple[Mount, list[tuple[str, str]]],
) -> None:
    mnt, pairs = files
    until = time.time() + SECONDS
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability_reader",
                str(until),
                str(seed),
                *[path for pair in pairs for path in pair],
            ],
            cwd=_REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(PROCESSES)
    ]
    tallies: list[Tally] = []
    try:

        def run_thread(seed: int) -> None:
            tallies.append(read_and_check(pairs, until, seed))

        threads = [
            threading.Thread(target=run_thread, args=(100 + seed,)) for seed in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for process in processes:
            out, _ = process.communicate(timeout=SECONDS + 60)
            assert process.returncode == 0
            tallies.append(Tally(*map(int, out.split())))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    assert len(tallies) == THREADS + PROCESSES
    assert [t.wrong for t in tallies] == [0] * len(tallies)
    assert [t.errors for t in tallies] == [0] * len(tallies), mnt.log()
    assert all(t.reads >= 10 for t in tallies)


# -- racing lookups ---------------------------------------------------------------------------

RACERS = 16


def _basename(index: int, name: str) -> str:
    return str(StorePath(bytes([index]) * 20, name))


def _slow_backend(basenames: list[str]) -> FakeBackend:
    """Every basename is a file of BLOB_A; PathInfo lookups take long enough to overlap."""
    backend = FakeBackend(pathinfo_delay=0.1)
    for basename in basenames:
        node = FileNode(basename.encode(), fx.BLOB_A_DIGEST, len(fx.BLOB_A), False)
        info = PathInfo(node, (), NarInfo(0, bytes(32)))
        backend.pathinfos[info.store_path.digest] = info.to_proto()
    backend.blobs[bytes(B3Digest.of(fx.BLOB_A))] = fx.BLOB_A
    return backend


def _racing_stats(paths: list[Path]) -> list[int]:
    """st_ino of each path, stat-ed by one thread per path, all released at once."""
    barrier = threading.Barrier(len(paths))
    inodes: list[int] = []

    def stat(path: Path) -> None:
        barrier.wait()
        inodes.append(os.stat(path).st_ino)

    threads = [threading.Thread(target=stat, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return inodes


def test_threads_racing_to_look_up_one_new_name_see_one_inode(tmp_path: Path) -> None:
    name = _basename(1, "raced")
    with fake_server(_slow_backend([name])) as url, mounted(url, tmp_path / "mnt") as mnt:
        inodes = _racing_stats([mnt / name] * RACERS)
    assert len(inodes) == RACERS
    assert len(set(inodes)) == 1


def test_threads_racing_to_look_up_names_of_the_same_content_see_one_inode(
    tmp_path: Path,
) -> None:
    names = [_basename(i, f"same-{i}") for i in range(RACERS)]
    with fake_server(_slow_backend(names)) as url, mounted(url, tmp_path / "mnt") as mnt:
        inodes = _racing_stats([mnt / name for name in names])
        assert (mnt / names[-1]).read_bytes() == fx.BLOB_A
    assert len(inodes) == RACERS
    assert len(set(inodes)) == 1

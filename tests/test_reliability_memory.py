"""Bounded memory: the daemon's RSS stays flat over 20 rounds of walking 100,000 entries.

Each round lists the root and all 100 store paths (directories of 1,000
files each, every file its own blob digest, so nothing is shared), which
hands the kernel 100,100 inodes through readdirplus, then drops the kernel's
caches; the kernel forgets every inode and the daemon's live inode count
(statfs ``f_files``) returns to 1, the root. Stat and readdir need no blob
contents, so the store holds only Directories and PathInfos.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.mounting import Mount, mounted, requires_fuse
from tests.reliability import drop_caches
from tvixmount.castore.digest import B3Digest
from tvixmount.castore.directory import Directory
from tvixmount.castore.nodes import DirectoryNode, FileNode
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.storepath import StorePath
from tvixmount.stores import StoreOptions, open_store

pytestmark = requires_fuse

PATHS = 100
FILES_PER_PATH = 1000
ROUNDS = 20
# RSS after a round moves by a few MiB with allocator timing (measured:
# 38.7-46.3 MiB over 20 rounds after 29.5 MiB fresh; 89-101 MiB before the
# C allocator and the packed listing cache), so the test compares the
# medians of rounds 2-6 and 16-20: a leak of 1 MiB per round (about ten bytes
# per entry walked) would add 14 MiB between them.
RSS_SLACK = 12 << 20


async def _build(url: str) -> None:
    store = open_store(url, StoreOptions(create=True))
    try:
        for p in range(PATHS):
            files = [
                FileNode(
                    f"file-{f:04d}".encode(),
                    B3Digest.of(f"{p}/{f}".encode()),
                    f,
                    executable=f % 7 == 0,
                )
                for f in range(FILES_PER_PATH)
            ]
            directory = Directory.from_nodes(files)
            await store.directories.put_many([directory])
            basename = str(StorePath(B3Digest.of(str(p).encode())[:20], f"wide-{p}"))
            node = DirectoryNode(basename.encode(), directory.digest(), directory.size())
            await store.pathinfos.put(PathInfo(node, (), NarInfo(1, bytes(32))))
    finally:
        await store.aclose()


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    base = tmp_path_factory.mktemp("memory")
    trio.run(_build, str(base / "store"))
    with mounted(str(base / "store"), base / "mnt", "--list-root") as mnt:
        yield mnt


def _live_inodes(mnt: Mount) -> int:
    return os.statvfs(mnt.path).f_files


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _walk(root: Path) -> int:
    entries = 0
    with os.scandir(root) as paths:
        for path in paths:
            entries += 1
            with os.scandir(path.path) as files:
                entries += sum(1 for _ in files)
    return entries


def _settle(mnt: Mount, timeout: float = 30.0) -> int:
    """Drop caches until the daemon holds only the root; returns the live inode count."""
    deadline = time.monotonic() + timeout
    while True:
        drop_caches()
        live = _live_inodes(mnt)
        if live == 1 or time.monotonic() > deadline:
            return live
        time.sleep(0.2)


def test_rss_stays_flat_over_twenty_rounds_of_walking_100000_entries(wide: Mount) -> None:
    (pid,) = wide.pids
    rss: list[int] = []
    held: list[int] = []
    for _ in range(ROUNDS):
        assert _walk(wide.path) == PATHS * (FILES_PER_PATH + 1)
        held.append(_live_inodes(wide))
        assert _settle(wide) == 1
        rss.append(_rss(pid))
    mib = [round(r / (1 << 20), 1) for r in rss]
    # A walk hands the kernel every entry at once (unless something else
    # dropped caches during it: the knob is machine-wide).
    assert max(held) == PATHS * (FILES_PER_PATH + 1) + 1
    early, late = statistics.median(rss[1:6]), statistics.median(rss[-5:])
    assert late <= early + RSS_SLACK, f"RSS per round (MiB): {mib}"

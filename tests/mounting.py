"""Real FUSE mounts for tests: a fixture store, and mounts that always go away.

Every mount runs the real CLI (``python -m tvixmount mount``) in a
subprocess, so the tests exercise the background mode users get. The
context manager unmounts and waits for the serving process in ``finally``,
whatever the test did.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.fixtures import castore as fx
from tvixmount.castore.blobservice import put_stream
from tvixmount.castore.nodes import Node
from tvixmount.fs.mount import is_mounted, serving_pids
from tvixmount.nar.writer import calculate_nar
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.stores import Store, StoreOptions, open_store

requires_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse"), reason="FUSE tests need /dev/fuse"
)
requires_nix = pytest.mark.skipif(
    shutil.which("nix-store") is None, reason="needs Nix (nix-store) as the oracle"
)

_EXIT_WAIT = 10.0


def tvixmount_command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "tvixmount", *map(str, args)]


def run_tvixmount(
    *args: str | os.PathLike[str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tvixmount_command(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


async def _put_pathinfo(store: Store, node: Node) -> None:
    try:
        nar_size, nar_sha256 = await calculate_nar(node, store.blobs, store.directories)
    except Exception:
        # Fixtures with missing pieces (the EIO tests) have no computable NAR.
        nar_size, nar_sha256 = 0, bytes(32)
    await store.pathinfos.put(PathInfo(node, (), NarInfo(nar_size, nar_sha256)))


async def _populate(
    url: str, blobs: Sequence[bytes], with_directories: bool, roots: Sequence[Node]
) -> None:
    store = open_store(url, StoreOptions(create=True))
    try:
        for blob in blobs:
            await put_stream(store.blobs, [blob])
        if with_directories:
            await store.directories.put_many(fx.DIRECTORIES)
        for node in roots:
            await _put_pathinfo(store, node)
    finally:
        await store.aclose()


def make_fixture_store(
    path: Path,
    *,
    blobs: Sequence[bytes] = fx.BLOBS,
    with_directories: bool = True,
    roots: Sequence[Node] = fx.ROOT_NODES,
) -> str:
    """An embedded store holding the tvix fixtures (parts may be left out); returns its URL."""
    trio.run(_populate, str(path), blobs, with_directories, roots)
    return str(path)


@dataclass
class Mount:
    path: Path
    store: str
    log_file: Path

    def __truediv__(self, name: str | bytes) -> Path:
        return self.path / os.fsdecode(name)

    @property
    def pids(self) -> list[int]:
        return serving_pids(str(self.path))

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""


def _wait_exit(pids: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if pid in serving_pids()]
    return alive


def force_unmount(mountpoint: Path) -> None:
    """Unmount and reap the server, however it is doing; the last resort is SIGKILL by pid."""
    pids = serving_pids(str(mountpoint))
    for attempt in range(50):
        if not is_mounted(str(mountpoint)):
            break
        flags = "-u" if attempt < 40 else "-uz"
        subprocess.run(["fusermount3", flags, str(mountpoint)], capture_output=True, check=False)
        time.sleep(0.1)
    for pid in _wait_exit(pids, _EXIT_WAIT):
        os.kill(pid, signal.SIGKILL)
    if is_mounted(str(mountpoint)):
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, check=False)


@contextmanager
def mounted(
    store: str, mountpoint: Path, *extra: str, log_file: Path | None = None
) -> Iterator[Mount]:
    """Mount ``store`` at ``mountpoint`` (created) with the real CLI; always unmount after."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    log_file = log_file or mountpoint.with_name(mountpoint.name + ".log")
    try:
        result = run_tvixmount(
            "--log-file", log_file, "mount", mountpoint, "--store", store, *extra
        )
        if result.returncode != 0:
            raise AssertionError(f"tvixmount mount failed ({result.returncode}): {result.stderr}")
        yield Mount(mountpoint, store, log_file)
    finally:
        force_unmount(mountpoint)


@contextmanager
def foreground_mount(store: str, mountpoint: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``tvixmount mount --foreground`` (mountpoint created); yields once the loop answers."""
    mountpoint.mkdir()
    proc = subprocess.Popen(
        tvixmount_command("mount", mountpoint, "--store", store, "--foreground"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(str(mountpoint)) and proc.poll() is None:
            assert time.monotonic() < deadline, "the mount did not appear"
            time.sleep(0.05)
        assert proc.poll() is None, "the foreground mount exited early"
        os.statvfs(mountpoint)  # the loop answers
        yield proc
    finally:
        force_unmount(mountpoint)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def fixture_store(tmp_path: Path) -> str:
    """The complete tvix fixture set in an embedded store."""
    return make_fixture_store(tmp_path / "store")


@pytest.fixture
def mnt(fixture_store: str, tmp_path: Path) -> Iterator[Mount]:
    """The fixture store mounted with default options."""
    with mounted(fixture_store, tmp_path / "mnt") as mount:
        yield mount


@pytest.fixture
def mnt_list_root(fixture_store: str, tmp_path: Path) -> Iterator[Mount]:
    with mounted(fixture_store, tmp_path / "mnt", "--list-root") as mount:
        yield mount

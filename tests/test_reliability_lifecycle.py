"""Signals while several processes read big files in a loop.

SIGTERM: clean unmount, exit 0. SIGKILL: the readers fail instead of hanging,
and ``tvixmount umount`` clears the stale mount. (Signals on an idle mount,
SIGKILL on an idle mount, and the stale mount explained at the next
``mount`` are in test_mount_lifecycle.py.)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mounting import foreground_mount, requires_fuse, run_tvixmount
from tests.reliability import make_file_store
from tvixmount.fs.mounttable import is_mounted
from tvixmount.fs.processes import serving_pids

pytestmark = requires_fuse

READERS = 4
_WAIT = 10.0

# Reads every file whole, again and again, dropping its pages first so that
# every read reaches the daemon; prints one line per verified round and exits
# quietly once the mount goes away under it.
_READER = """
import hashlib, os, sys
files = sys.argv[1:]
expected = [bytes.fromhex(files.pop()) for _ in range(len(files) // 2)][::-1]
while True:
    for path, digest in zip(files, expected):
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                hasher = hashlib.sha256()
                while block := os.read(fd, 1 << 17):
                    hasher.update(block)
            finally:
                os.close(fd)
        except OSError as exc:
            print("stopped", exc.errno, flush=True)
            sys.exit(0)
        if hasher.digest() != digest:
            print("WRONG", path, flush=True)
            sys.exit(1)
    print("round", flush=True)
"""


@pytest.fixture(scope="module")
def big_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, bytes]]:
    """A store of three 4 MiB files of random bytes; returns its URL and basename -> bytes."""
    rng = random.Random(9)
    contents = {f"big-{i}": rng.randbytes(4 << 20) for i in range(3)}
    url, basenames = make_file_store(tmp_path_factory.mktemp("big") / "store", contents)
    return url, {basenames[name]: data for name, data in contents.items()}


@contextlib.contextmanager
def _readers(files: dict[Path, bytes], count: int) -> Iterator[list[subprocess.Popen[str]]]:
    argv = [str(path) for path in files] + [hashlib.sha256(d).hexdigest() for d in files.values()]
    procs = [
        subprocess.Popen([sys.executable, "-c", _READER, *argv], stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else "(nothing)"


@contextlib.contextmanager
def _heavy_reads(
    big_files: tuple[str, dict[str, bytes]], mountpoint: Path
) -> Iterator[tuple[subprocess.Popen[bytes], list[subprocess.Popen[str]]]]:
    """A foreground mount with READERS processes reading it in full swing."""
    store, contents = big_files
    with foreground_mount(store, mountpoint) as server:
        files = {mountpoint / name: data for name, data in contents.items()}
        with _readers(files, READERS) as readers:
            # Every reader has verified a whole round: reads are in full swing.
            assert [_first_line(r, 60) for r in readers] == ["round"] * READERS
            yield server, readers


def test_sigterm_during_heavy_reads_unmounts_cleanly_with_exit_0(
    big_files: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    mountpoint = tmp_path / "mnt"
    with _heavy_reads(big_files, mountpoint) as (server, readers):
        (pid,) = serving_pids(str(mountpoint))
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=_WAIT) == 0
        assert not is_mounted(str(mountpoint))
        for reader in readers:
            out, _ = reader.communicate(timeout=_WAIT)
            assert "WRONG" not in out
            assert out.splitlines()[-1].startswith("stopped")
            assert reader.returncode == 0
    assert pid not in serving_pids()
    # The mount point is an ordinary empty directory again, ready for the next mount.
    assert os.listdir(mountpoint) == []


def test_sigkill_during_heavy_reads_fails_readers_and_umount_clears_the_mount(
    big_files: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    mountpoint = tmp_path / "mnt"
    with _heavy_reads(big_files, mountpoint) as (server, readers):
        server.kill()
        server.wait(timeout=_WAIT)
        # No reader hangs on the dead daemon: each gets an error and stops.
        outputs = [reader.communicate(timeout=_WAIT)[0] for reader in readers]
        # ECONNABORTED for requests in flight when the connection died, ENOTCONN after.
        dead = {f"stopped {errno.ECONNABORTED}", f"stopped {errno.ENOTCONN}"}
        assert all(out.splitlines()[-1] in dead for out in outputs), outputs
        assert is_mounted(str(mountpoint))  # stale: nobody serves it
        result = run_tvixmount("umount", mountpoint)
        assert result.returncode == 0, result.stderr
        assert not is_mounted(str(mountpoint))

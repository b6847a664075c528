"""FUSE's no-open mode on a real mount: files open without asking the daemon.

With pyfuse3 carrying tvixmount's patch (``scripts/install-pyfuse3``) the
mount answers the first OPEN with ENOSYS, and the kernel opens every file of
the mount itself from then on. What shows it: with the daemon stopped
(SIGSTOP), a file whose inode the kernel knows still opens and closes; a
mount opening files the stock way (``TVIXMOUNT_NO_OPEN=0``) hangs instead,
waiting for the daemon to answer the OPEN.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.mounting import import_trees, mounted, requires_fuse
from tests.reliability import drop_caches
from tvixmount.fs.mount import NO_OPEN_ENV, no_open_available
from tvixmount.fs.operations import OPEN_FILES
from tvixmount.fs.processes import serving_pids

pytestmark = [
    requires_fuse,
    pytest.mark.skipif(
        not no_open_available(), reason="needs pyfuse3 with tvixmount's patch and Linux 4.19+"
    ),
]

# Opens and closes every file given on its command line.
_OPEN_ALL = "import os, sys\nfor p in sys.argv[1:]:\n    os.close(os.open(p, os.O_RDONLY))\n"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A tree of more files than the mount keeps open (small, and big enough to
    be blob files of their own in the local store), imported into a store."""
    base = tmp_path_factory.mktemp("noopen")
    tree = base / "tree"
    for i in range(OPEN_FILES + 40):
        sub = tree / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        size = 200 << 10 if i % 4 else 100 + 37 * i
        (sub / f"f{i}").write_bytes(os.urandom(size))
    (tree / "empty").write_bytes(b"")
    (info,) = import_trees(base / "store", tree)
    return tree, str(base / "store"), str(info.store_path)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def _stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _open_all_within(paths: list[Path], seconds: float) -> bool:
    """Whether a process opened and closed every path within ``seconds``."""
    try:
        subprocess.run(
            [sys.executable, "-c", _OPEN_ALL, *map(str, paths)], timeout=seconds, check=True
        )
    except subprocess.TimeoutExpired:
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="drop_caches needs root")
def test_files_read_right_and_reopen_without_the_daemon(
    imported: tuple[Path, str, str], tmp_path: Path
) -> None:
    tree, store, path = imported
    with mounted(store, tmp_path / "mnt") as mount:
        (pid,) = serving_pids(mount.path)
        fds = _fds(pid)
        drop_caches()
        top = mount.path / Path(path).name
        files = _files(top)
        assert [f.relative_to(top) for f in files] == [f.relative_to(tree) for f in _files(tree)]
        for _ in range(2):  # each time past the open-blob limit
            for file in files:
                assert file.read_bytes() == (tree / file.relative_to(top)).read_bytes()
        # Blobs are kept open between reads only up to the limit.
        assert _fds(pid) <= fds + OPEN_FILES
        with _stopped(pid):
            assert _open_all_within(files, 30), "an open waited for the stopped daemon"


def test_stock_opens_wait_for_the_daemon(
    imported: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: opened the stock way, an open needs the daemon."""
    tree, store, path = imported
    monkeypatch.setenv(NO_OPEN_ENV, "0")
    with mounted(store, tmp_path / "mnt") as mount:
        (pid,) = serving_pids(mount.path)
        top = mount.path / Path(path).name
        files = _files(top)[:3]
        for file in files:
            assert file.read_bytes() == (tree / file.relative_to(top)).read_bytes()
        with _stopped(pid):
            assert not _open_all_within(files, 2)

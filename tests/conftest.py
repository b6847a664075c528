"""Suite-wide checks shared by every test module."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tvixmount.fs.mount import serving_pids, tvixmount_mounts


def _leftovers(base: Path) -> tuple[list[str], list[int]]:
    """tvixmount mounts under ``base`` and serving processes whose command line names it."""
    prefix = str(base.resolve())
    points = [p for p in tvixmount_mounts() if p.startswith(prefix)]
    pids = []
    for pid in serving_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(os.path.abspath(arg).startswith(prefix) for arg in argv if arg.startswith("/")):
            pids.append(pid)
    return points, pids


@pytest.fixture(scope="session", autouse=True)
def no_mount_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the run if a test left a FUSE mount or a serving process (then clean it up)."""
    yield
    base = tmp_path_factory.getbasetemp()
    points, pids = _leftovers(base)
    if not points and not pids:
        return
    from tests.mounting import force_unmount

    for point in points:
        force_unmount(Path(point))
    for pid in pids:
        if pid in serving_pids():
            os.kill(pid, signal.SIGKILL)
    pytest.fail(f"tests left tvixmount mounts {points} and serving processes {pids}")

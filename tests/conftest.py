"""Suite-wide checks shared by every test module."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tvixmount.fs.processes import serving_pids
from tvixmount.testing.mounts import force_unmount, leftovers


@pytest.fixture(scope="session", autouse=True)
def no_mount_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the run if a test left a FUSE mount or a serving process (then clean it up)."""
    yield
    points, pids = leftovers(tmp_path_factory.getbasetemp())
    if not points and not pids:
        return
    for point in points:
        force_unmount(Path(point))
    for pid in pids:
        if pid in serving_pids():
            os.kill(pid, signal.SIGKILL)
    pytest.fail(f"tests left tvixmount mounts {points} and serving processes {pids}")

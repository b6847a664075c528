"""The ``make run`` / ``make stop`` demo, on a store in a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.mounting import force_unmount, requires_fuse
from tvixmount.fs.mounttable import is_mounted
from tvixmount.fs.processes import serving_pids

pytestmark = requires_fuse


def _demo(action: str, mountpoint: Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tvixmount.demo", action, str(mountpoint)],
        capture_output=True,
        text=True,
        env={**os.environ, "TVIXMOUNT_STORE": str(store)},
        timeout=120,
        check=False,
    )


def test_demo_up_mounts_shows_the_tree_and_down_cleans_up(tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    try:
        up = _demo("up", mountpoint, tmp_path / "store")
        assert up.returncode == 0, up.stderr
        assert is_mounted(str(mountpoint))
        assert "bin/" in up.stdout
        assert "hi -> hello" in up.stdout
        assert "make stop" in up.stdout
        hello = next(mountpoint.glob("*-hello"))
        run = subprocess.run([hello / "bin" / "hello"], capture_output=True, text=True)
        assert run.stdout.startswith("Hello from tvixmount")

        down = _demo("down", mountpoint, tmp_path / "store")
        assert down.returncode == 0, down.stderr
        assert not is_mounted(str(mountpoint))
        assert not serving_pids(str(mountpoint))
        assert not mountpoint.exists()
    finally:
        force_unmount(mountpoint)


def test_demo_down_without_a_mount_is_a_no_op(tmp_path: Path) -> None:
    down = _demo("down", tmp_path / "mnt", tmp_path / "store")
    assert down.returncode == 0
    assert "nothing is mounted" in down.stdout


def test_demo_up_on_a_file_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    up = _demo("up", tmp_path / "file", tmp_path / "store")
    assert up.returncode == 1
    assert up.stderr == f"tvixmount: error: {tmp_path / 'file'}: File exists\n"

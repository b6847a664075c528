"""Mount lifecycle: background start, clean exits, refused mount points, stale mounts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.housekeeping import one_error_line
from tests.mounting import (
    force_unmount,
    foreground_mount,
    make_fixture_store,
    mounted,
    requires_fuse,
    run_tvixmount,
    tvixmount_command,
)
from tvixmount.fs.mounttable import is_mounted
from tvixmount.fs.processes import serving_pids, wait_gone

pytestmark = requires_fuse

_WAIT = 10.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_fixture_store(tmp_path_factory.mktemp("lifecycle") / "store")


# -- background mode --------------------------------------------------------


def test_background_mount_returns_once_the_mount_answers(store: str, tmp_path: Path) -> None:
    with mounted(store, tmp_path / "mnt") as mnt:
        assert is_mounted(str(mnt.path))
        assert (mnt / fx.ROOT_BLOB_A).read_bytes() == fx.BLOB_A


def test_serving_process_command_line_names_the_mount_point(store: str, tmp_path: Path) -> None:
    with mounted(store, tmp_path / "mnt") as mnt:
        pids = mnt.pids
        assert len(pids) == 1
        argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
        assert os.fsencode(mnt.path) in argv


# Runs the background mount as a child subreaper, so the orphaned serving
# process is re-parented to it and its exit status can be collected.
_REAPER = """
import ctypes, os, subprocess, sys
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
mount = subprocess.run(sys.argv[1:])
print(f"mount {mount.returncode}", flush=True)
if mount.returncode == 0:
    _, status = os.wait()
    print(f"server {os.waitstatus_to_exitcode(status)}", flush=True)
"""


@pytest.fixture
def reaped_background(store: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    reaper = subprocess.Popen(
        [sys.executable, "-c", _REAPER, *tvixmount_command("mount", mountpoint, "--store", store)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reaper.stdout is not None
        assert reaper.stdout.readline() == "mount 0\n"
        yield reaper, mountpoint
    finally:
        force_unmount(mountpoint)
        reaper.wait(timeout=_WAIT)


def _server_exit_code(reaper: subprocess.Popen[str]) -> str:
    out, _ = reaper.communicate(timeout=_WAIT)
    return out.strip()


def test_background_server_exits_0_after_external_unmount(
    reaped_background: tuple[subprocess.Popen[str], Path],
) -> None:
    reaper, mountpoint = reaped_background
    subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
    assert _server_exit_code(reaper) == "server 0"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_background_server_exits_0_and_unmounts_on_signal(
    reaped_background: tuple[subprocess.Popen[str], Path], signum: signal.Signals
) -> None:
    reaper, mountpoint = reaped_background
    (pid,) = serving_pids(str(mountpoint))
    os.kill(pid, signum)
    assert _server_exit_code(reaper) == "server 0"
    assert not is_mounted(str(mountpoint))


def test_umount_command_unmounts_and_waits_for_the_server(store: str, tmp_path: Path) -> None:
    with mounted(store, tmp_path / "mnt") as mnt:
        pids = mnt.pids
        result = run_tvixmount("umount", mnt.path)
        assert result.returncode == 0, result.stderr
        assert not is_mounted(str(mnt.path))
        assert not set(pids) & set(serving_pids())


def test_umount_of_an_unmounted_directory_fails_in_one_line(tmp_path: Path) -> None:
    line = one_error_line(run_tvixmount("umount", tmp_path))
    assert "not mounted" in line


def _mount_entry(mountpoint: Path) -> tuple[str, str, list[str]]:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, point, fstype, options, *_ = line.split(" ")
        if point == str(mountpoint):
            return source, fstype, options.split(",")
    raise AssertionError(f"{mountpoint} is not mounted")


def test_mount_is_read_only_and_named_tvixmount(store: str, tmp_path: Path) -> None:
    with mounted(store, tmp_path / "mnt") as mnt:
        source, fstype, options = _mount_entry(mnt.path)
    assert source == "tvixmount"
    assert fstype == "fuse.tvixmount"
    assert "ro" in options
    assert "default_permissions" in options
    assert "allow_other" not in options


def test_allow_other_is_passed_to_the_mount(store: str, tmp_path: Path) -> None:
    with mounted(store, tmp_path / "mnt", "--allow-other") as mnt:
        _, _, options = _mount_entry(mnt.path)
    assert "allow_other" in options


# -- foreground mode: exit codes ----------------------------------------------


@pytest.fixture
def foreground(store: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    mountpoint = tmp_path / "mnt"
    with foreground_mount(store, mountpoint) as proc:
        os.stat(mountpoint / os.fsdecode(fx.ROOT_BLOB_A))
        yield proc, mountpoint


def test_foreground_exits_0_after_external_unmount(
    foreground: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, mountpoint = foreground
    subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
    assert proc.wait(timeout=_WAIT) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_foreground_exits_0_and_unmounts_on_signal(
    foreground: tuple[subprocess.Popen[bytes], Path], signum: signal.Signals
) -> None:
    proc, mountpoint = foreground
    proc.send_signal(signum)
    assert proc.wait(timeout=_WAIT) == 0
    assert not is_mounted(str(mountpoint))


def test_sigterm_with_an_open_file_still_unmounts(
    foreground: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, mountpoint = foreground
    fd = os.open(mountpoint / os.fsdecode(fx.ROOT_BLOB_B), os.O_RDONLY)
    try:
        assert os.read(fd, 4096) == fx.BLOB_B[:4096]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=_WAIT) == 0
        assert not is_mounted(str(mountpoint))
    finally:
        # The connection is gone, so the kernel may fail the close (ENOTCONN).
        with contextlib.suppress(OSError):
            os.close(fd)


# -- refused mount points ---------------------------------------------------


def test_missing_mount_point_fails_in_one_line(store: str, tmp_path: Path) -> None:
    line = one_error_line(run_tvixmount("mount", tmp_path / "absent", "--store", store))
    assert "does not exist" in line


def test_file_as_mount_point_fails_in_one_line(store: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    line = one_error_line(run_tvixmount("mount", tmp_path / "file", "--store", store))
    assert "not a directory" in line


def test_busy_mount_point_fails_in_one_line(store: str, tmp_path: Path) -> None:
    with mounted(store, tmp_path / "mnt") as mnt:
        line = one_error_line(run_tvixmount("mount", mnt.path, "--store", store))
        assert "busy" in line


def test_missing_store_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    line = one_error_line(run_tvixmount("mount", tmp_path / "mnt", "--store", tmp_path / "nope"))
    assert "no tvixmount store" in line
    assert not is_mounted(str(tmp_path / "mnt"))


def test_unknown_store_scheme_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    line = one_error_line(run_tvixmount("mount", tmp_path / "mnt", "--store", "bogus://x"))
    assert "bogus" in line


# -- SIGKILL leaves a stale mount -------------------------------------------


@pytest.fixture
def stale_mount(store: str, tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "mnt"
    try:
        with mounted(store, mountpoint) as mnt:
            pids = mnt.pids
            os.kill(pids[0], signal.SIGKILL)
            assert not wait_gone(pids, _WAIT)
            assert is_mounted(str(mountpoint))
            yield mountpoint
    finally:
        force_unmount(mountpoint)


def test_stale_mount_is_explained_at_the_next_mount(store: str, stale_mount: Path) -> None:
    line = one_error_line(run_tvixmount("mount", stale_mount, "--store", store))
    assert "stale" in line
    assert "tvixmount umount" in line


def test_umount_clears_a_stale_mount(store: str, stale_mount: Path) -> None:
    result = run_tvixmount("umount", stale_mount)
    assert result.returncode == 0, result.stderr
    assert not is_mounted(str(stale_mount))
    with mounted(store, stale_mount) as mnt:
        assert (mnt / fx.ROOT_BLOB_A).read_bytes() == fx.BLOB_A

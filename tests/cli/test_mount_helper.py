"""``mount.tvixmount``: mount(8)'s helper interface, translated to ``tvixmount mount``.

The real mounts run the console script installed in the venv, once called
directly as mount(8) would and once through mount(8) itself, in a private
mount namespace whose /usr/sbin (where mount(8) looks for helpers) is a
tmpfs holding only our helper.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.mounting import force_unmount, make_fixture_store, requires_fuse, run_tvixmount
from tvixmount.cli.mount_helper import MountOptionError, helper_call

HELPER = Path(sys.executable).parent / "mount.tvixmount"
KEY = "cache-1:" + "A" * 43 + "="
COMPLICATED = fx.ROOT_DIRECTORY_COMPLICATED.decode()


@pytest.mark.parametrize(
    ("argv", "arguments"),
    [
        (["/srv/store", "/mnt"], ["mount", "/mnt", "--store", "/srv/store"]),
        (
            ["file:///srv/cache", "/nix/store", "-o", f"ro,nofail,trusted-public-key={KEY}"],
            ["mount", "/nix/store", "--store", "file:///srv/cache", "--trusted-public-key", KEY],
        ),
        (
            ["s", "/m", "-o", "defaults,list-root,allow_other,no-xattr,timeout=5,cache-dir=/c"],
            [
                *["mount", "/m", "--store", "s", "--list-root", "--allow-other", "--no-xattr"],
                *["--timeout", "5", "--cache-dir", "/c"],
            ],
        ),
        (
            ["s", "/m", "-o", "_netdev,noauto,x-systemd.automount,comment=x=y,nosuid,nodev"],
            ["mount", "/m", "--store", "s"],
        ),
        (
            ["s", "/m", "-v", "-n", "-o", "no-require-sigs,log-file=/l", "-t", "tvixmount"],
            ["-v", "mount", "/m", "--store", "s", "--no-require-sigs", "--log-file", "/l"],
        ),
        (
            ["s", "/m", "-o", f"trusted-public-key={KEY}", "-o", "trusted-public-key=b:Bw=="],
            [
                "mount",
                "/m",
                "--store",
                "s",
                "--trusted-public-key",
                KEY,
                "--trusted-public-key",
                "b:Bw==",
            ],
        ),
        (["s", "/m", "-s", "-o", "ro,frobnicate"], ["mount", "/m", "--store", "s"]),
    ],
    ids=["bare", "fstab", "ours", "generic", "verbose", "two-keys", "sloppy"],
)
def test_helper_options_become_mount_arguments(argv: list[str], arguments: list[str]) -> None:
    assert helper_call(argv).arguments == arguments


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["s", "/m", "-o", "ro,frobnicate"], "unknown mount option 'frobnicate'"),
        (["s", "/m", "-o", "timeout"], "needs a value"),
        (["s", "/m", "-o", "cache-dir="], "needs a value"),
        (["s", "/m", "-t", "ext4"], "not tvixmount"),
        (["s", "/m", "-N", "/proc/1/ns/mnt"], "not supported"),
        (["s"], "required"),
    ],
)
def test_helper_refuses_what_it_cannot_honour(argv: list[str], message: str) -> None:
    with pytest.raises(MountOptionError, match=message):
        helper_call(argv)


def _helper(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HELPER, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_refusals_are_one_line_and_exit_1(tmp_path: Path) -> None:
    result = _helper(tmp_path, tmp_path, "-o", "frobnicate")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("mount.tvixmount: error: ") and result.stderr.count("\n") == 1


@pytest.fixture
def store(tmp_path: Path) -> str:
    return make_fixture_store(tmp_path / "store")


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "mnt"
    path.mkdir()
    try:
        yield path
    finally:
        force_unmount(path)


@requires_fuse
def test_fake_mount_checks_but_mounts_nothing(store: str, mountpoint: Path) -> None:
    result = _helper(store, mountpoint, "-f", "-o", "ro,list-root")
    assert result.returncode == 0, result.stderr
    assert not os.path.ismount(mountpoint)


@requires_fuse
def test_the_console_script_mounts_in_the_background(
    store: str, mountpoint: Path, tmp_path: Path
) -> None:
    log = tmp_path / "mount.log"
    options = f"ro,nofail,_netdev,list-root,no-xattr,timeout=10,log-file={log}"
    result = _helper(store, mountpoint, "-o", options)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert sorted(os.listdir(mountpoint)) == sorted(n.name.decode() for n in fx.ROOT_NODES)
    assert (mountpoint / fx.ROOT_HELLOWORLD_EXECUTABLE.decode()).read_bytes() == b"Hello World!"
    with pytest.raises(OSError):  # no-xattr
        os.getxattr(mountpoint / COMPLICATED, "user.tvix.castore.directory.digest")
    unmounted = run_tvixmount("umount", mountpoint)
    assert unmounted.returncode == 0, unmounted.stderr
    assert not os.path.ismount(mountpoint)


@requires_fuse
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_mount_8_runs_the_helper_from_fstab_options(store: str, mountpoint: Path) -> None:
    # Everything happens inside the namespace; the trap unmounts whatever the test did.
    again = mountpoint.parent / "again"
    script = f"""
set -e
umount="{sys.executable} -m tvixmount umount"
trap '$umount {mountpoint} >/dev/null 2>&1 || true; $umount {again} >/dev/null 2>&1 || true' EXIT
mount -t tmpfs helpers /usr/sbin
ln -s {HELPER} /usr/sbin/mount.tvixmount
mount -t tvixmount -o ro,nofail,list-root {store} {mountpoint}
cat {mountpoint}/{fx.ROOT_HELLOWORLD_EXECUTABLE.decode()}
echo
grep " {mountpoint} " /proc/self/mounts
mount -t tvixmount {store} {again}
grep " {again} " /proc/self/mounts
{sys.executable} -m tvixmount umount {again}
{sys.executable} -m tvixmount umount {mountpoint}
"""
    again.mkdir()
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0] == "Hello World!"
    assert lines[1].split()[:3] == ["tvixmount", str(mountpoint), "fuse.tvixmount"]
    assert "ro" in lines[1].split()[3].split(",")
    # Without ro, mount(8) passes rw (as fstab's defaults does): mounted read-only all the same.
    assert lines[2].split()[1] == str(again)
    assert "ro" in lines[2].split()[3].split(",")

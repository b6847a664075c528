"""Mount helpers that need no FUSE: mount point checks, options, serving-process detection."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tvixmount.errors import MountError
from tvixmount.fs.mount import MountOptions
from tvixmount.fs.mountpoint import check_mountpoint
from tvixmount.fs.processes import is_serving_command

PY = "/work/.venv/bin/python3"


def test_mount_options_are_read_only_and_named() -> None:
    assert MountOptions().fuse_options() == {
        "ro",
        "fsname=tvixmount",
        "subtype=tvixmount",
        "default_permissions",
    }


def test_allow_other_is_added_when_asked() -> None:
    assert "allow_other" in MountOptions(allow_other=True).fuse_options()


def test_check_mountpoint_returns_the_canonical_path(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert check_mountpoint(tmp_path / "link") == str((tmp_path / "real").resolve())


def test_check_mountpoint_rejects_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(MountError, match="does not exist"):
        check_mountpoint(tmp_path / "absent")


def test_check_mountpoint_rejects_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(MountError, match="not a directory"):
        check_mountpoint(tmp_path / "f")


def test_a_non_empty_directory_is_a_mount_point_and_what_it_hides_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text("")
    with caplog.at_level(logging.INFO, logger="tvixmount.fs.mountpoint"):
        assert check_mountpoint(tmp_path) == str(tmp_path.resolve())
    assert [r.getMessage() for r in caplog.records] == [
        f"mounting over a non-empty directory {tmp_path.resolve()} (3 entries hidden)"
    ]


def test_an_empty_directory_hides_nothing_and_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tvixmount.fs.mountpoint"):
        check_mountpoint(tmp_path)
    assert not caplog.records


def test_a_directory_something_else_is_mounted_on_is_a_mount_point(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="tvixmount.fs.mountpoint"):
        assert check_mountpoint("/proc") == "/proc"
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("mounting over the proc mount at /proc (")


@pytest.mark.parametrize(
    "argv",
    [
        ["tvixmount", "mount", "/m"],
        [PY, "/work/.venv/bin/tvixmount", "mount", "/m", "--list-root"],
        [PY, "-m", "tvixmount", "-v", "--log-file", "/l", "mount", "/m"],
        [PY, "-m", "tvixmount", "mount", "--store", "/s", "/m"],
        ["/sbin/mount.tvixmount", "/s", "/m", "-o", "ro,list-root"],
        [PY, "/usr/bin/mount.tvixmount", "file:///cache", "/m"],
    ],
)
def test_serving_command_lines_are_recognised(argv: list[str]) -> None:
    assert is_serving_command(argv, "/", "/m")
    assert is_serving_command(argv, "/")


def test_relative_mount_point_is_resolved_against_the_cwd() -> None:
    assert is_serving_command(["tvixmount", "mount", "mnt"], "/work", "/work/mnt")
    assert not is_serving_command(["tvixmount", "mount", "mnt"], "/elsewhere", "/work/mnt")


@pytest.mark.parametrize(
    "argv",
    [
        ["tvixmount", "umount", "/m"],
        ["tvixmount", "ls", "mount"],
        [PY, "-c", "script", PY, "-m", "tvixmount", "mount", "/m"],
        [PY, "-m", "tvixmount.demo", "up", "/m"],
        [""],
    ],
)
def test_other_command_lines_are_not_serving(argv: list[str]) -> None:
    assert not is_serving_command(argv, "/", "/m")

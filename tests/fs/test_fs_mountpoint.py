"""Mount point checks that need no FUSE mount of their own."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tvixmount.errors import MountError
from tvixmount.fs.mountpoint import check_mountpoint


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

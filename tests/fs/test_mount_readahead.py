"""A mount made by root gets a 1 MiB kernel readahead (read back from sysfs)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.mounting import foreground_mount, make_fixture_store, mounted, requires_fuse
from tvixmount.fs.mounttable import READ_AHEAD_KB, mount_at, set_read_ahead

pytestmark = requires_fuse

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root may set readahead")


@pytest.fixture
def fixture_store(tmp_path: Path) -> str:
    return make_fixture_store(tmp_path / "store")


def read_ahead_kb(mountpoint: Path) -> int:
    st = os.stat(mountpoint)
    knob = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
    return int(knob.read_text())


def test_readahead_default_is_one_mib() -> None:
    assert READ_AHEAD_KB == 1024


@requires_root
def test_background_mount_has_the_readahead_set_when_the_command_returns(
    fixture_store: str, tmp_path: Path
) -> None:
    with mounted(fixture_store, tmp_path / "mnt") as mount:
        assert read_ahead_kb(mount.path) == READ_AHEAD_KB


@requires_root
def test_foreground_mount_gets_the_readahead(fixture_store: str, tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    with foreground_mount(fixture_store, mountpoint):
        # No report tells when a foreground server has set it: poll briefly.
        deadline = time.monotonic() + 10
        while read_ahead_kb(mountpoint) != READ_AHEAD_KB and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_ahead_kb(mountpoint) == READ_AHEAD_KB


def test_mount_device_is_the_device_a_stat_of_the_mount_reports(
    fixture_store: str, tmp_path: Path
) -> None:
    with mounted(fixture_store, tmp_path / "mnt") as mount:
        st = os.stat(mount.path)
        entry = mount_at(str(mount.path))
        assert entry is not None
        assert entry.device == (os.major(st.st_dev), os.minor(st.st_dev))


def test_a_plain_directory_has_no_mount(tmp_path: Path) -> None:
    assert mount_at(str(tmp_path)) is None


@requires_root
def test_set_read_ahead_on_a_plain_directory_changes_nothing_and_says_so(tmp_path: Path) -> None:
    assert set_read_ahead(str(tmp_path), READ_AHEAD_KB) is False

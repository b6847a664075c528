"""Serving processes are recognised by their command lines."""

from __future__ import annotations

import os

import pytest

from tvixmount.fs.processes import is_serving_command, serving_processes

PY = "/work/.venv/bin/python3"


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


def test_this_test_run_is_not_a_serving_process() -> None:
    assert os.getpid() not in serving_processes()

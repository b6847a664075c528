"""A mount serves from an interpreter using the C library's malloc (see cli/main.py).

pymalloc keeps a 1 MiB arena while one object in it lives, so a daemon that
freed a million inodes would keep tens of MiB; the mount command therefore
re-executes itself with ``PYTHONMALLOC=malloc`` unless the user chose one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.mounting import make_fixture_store, mounted, requires_fuse
from tvixmount.cli import main as cli_main


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if b"=" in entry)


class _Exec(Exception):
    pass


def _exec_call(
    monkeypatch: pytest.MonkeyPatch, orig_argv: list[str]
) -> tuple[str, list[str], dict[str, str]] | None:
    """What ``main`` would execute for a process started with ``orig_argv`` (None: nothing)."""
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def execve(path: str, args: list[str], env: dict[str, str]) -> None:
        calls.append((path, args, env))
        raise _Exec

    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.setattr(os, "execve", execve)
    try:
        cli_main.serve_with_the_c_allocator()
    except _Exec:
        return calls[0]
    return None


def test_the_mount_command_re_executes_itself_with_the_c_allocator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    monkeypatch.setenv("TVIXMOUNT_TEST_MARK", "kept")
    call = _exec_call(monkeypatch, ["python3", "-m", "tvixmount", "-v", "mount", "/m"])
    assert call is not None
    path, args, env = call
    assert path == sys.executable
    assert args == [sys.executable, "-m", "tvixmount", "-v", "mount", "/m"]
    assert env["PYTHONMALLOC"] == "malloc"
    assert env["TVIXMOUNT_TEST_MARK"] == "kept"


@pytest.mark.parametrize(
    "orig_argv",
    [
        ["python3", "-m", "tvixmount", "ls", "/s"],
        ["python3", "-m", "tvixmount", "umount", "/m"],
        ["python3", "-c", "from tvixmount.cli.main import main; main()", "mount", "/m"],
    ],
)
def test_other_commands_and_embedding_processes_are_not_re_executed(
    monkeypatch: pytest.MonkeyPatch, orig_argv: list[str]
) -> None:
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    assert _exec_call(monkeypatch, orig_argv) is None


def test_an_allocator_the_user_chose_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONMALLOC", "pymalloc")
    assert _exec_call(monkeypatch, ["tvixmount", "mount", "/m"]) is None


@requires_fuse
def test_the_serving_process_runs_with_the_c_allocator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    with mounted(make_fixture_store(tmp_path / "store"), tmp_path / "mnt") as mount:
        [pid] = mount.pids
        assert _environment(pid).get("PYTHONMALLOC") == "malloc"
        name = fx.ROOT_NODES[0].name
        assert (mount / name).exists()


@requires_fuse
def test_the_serving_process_keeps_a_user_chosen_allocator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONMALLOC", "pymalloc")
    with mounted(make_fixture_store(tmp_path / "store"), tmp_path / "mnt") as mount:
        [pid] = mount.pids
        assert _environment(pid).get("PYTHONMALLOC") == "pymalloc"

"""Finding the processes that serve tvixmount mounts: one scan of ``/proc``.

A serving process is recognised by its command line (``tvixmount mount
MOUNTPOINT ...``, as DESIGN.md promises ``ps`` shows), read together with its
working directory so that a relative mount point resolves as it did for it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..command_line import mount_arguments


def is_serving_command(argv: list[str], cwd: str, mountpoint: str | None = None) -> bool:
    """Whether a command line (run in ``cwd``) serves ``mountpoint`` (or any mount point)."""
    arguments = mount_arguments(argv)
    if arguments is None:
        return False
    return mountpoint is None or mountpoint in _absolute(arguments, cwd)


def _absolute(arguments: list[str], cwd: str) -> list[str]:
    return [os.path.normpath(os.path.join(cwd, arg)) for arg in arguments]


def serving_processes() -> dict[int, list[str]]:
    """Every ``tvixmount mount`` process but this one -> its mount arguments, made absolute.

    The arguments include the mount point (and option values, which a caller
    matching paths may ignore).
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        arguments = mount_arguments(argv)
        if arguments is not None and _running(int(entry.name)):
            found[int(entry.name)] = _absolute(arguments, cwd)
    return found


def serving_pids(mountpoint: str | os.PathLike[str] | None = None) -> list[int]:
    """Processes serving ``mountpoint`` (or any mount point)."""
    wanted = None if mountpoint is None else os.path.normpath(os.fspath(mountpoint))
    return [
        pid
        for pid, arguments in serving_processes().items()
        if wanted is None or wanted in arguments
    ]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie keeps its /proc entry until reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds for ``pids`` to exit; those still running."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if _running(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _running(pid)]
    return alive

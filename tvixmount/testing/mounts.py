"""Real mounts for tests and benchmarks: the CLI in a subprocess, always torn down.

The one mount harness of the tree (the test suite, the pytest plugin and
bench/ use it): a mount runs the real ``tvixmount mount`` in background mode,
as users get it, and the context managers unmount and reap the serving
process in ``finally``, whatever the caller did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fs.mounttable import tvixmount_at, tvixmount_mounts
from ..fs.processes import serving_pids, serving_processes, wait_gone

_EXIT_WAIT = 10.0
_MOUNT_TIMEOUT = 60.0

PathArg = str | os.PathLike[str]


def tvixmount_command(*args: PathArg) -> list[str]:
    return [sys.executable, "-m", "tvixmount", *map(str, args)]


def run_tvixmount(*args: PathArg, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tvixmount_command(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Mount:
    path: Path
    store: str
    log_file: Path
    startup_s: float  # from running `tvixmount mount` to its return (the mount answers)

    def __truediv__(self, name: str | bytes) -> Path:
        return self.path / os.fsdecode(name)

    @property
    def pids(self) -> list[int]:
        return serving_pids(self.path)

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""


def force_unmount(mountpoint: PathArg) -> None:
    """Unmount the tvixmount at ``mountpoint`` and reap its server, however it is doing.

    Mounts below it are left alone. The last resort is SIGKILL by pid.
    """
    point = str(mountpoint)
    pids = serving_pids(point)
    for attempt in range(50):
        if not tvixmount_at(point):
            break
        flags = "-u" if attempt < 40 else "-uz"
        subprocess.run(["fusermount3", flags, point], capture_output=True, check=False)
        time.sleep(0.1)
    for pid in wait_gone(pids, _EXIT_WAIT):
        os.kill(pid, signal.SIGKILL)
    if tvixmount_at(point):
        subprocess.run(["fusermount3", "-uz", point], capture_output=True, check=False)


@contextmanager
def mounted(
    store: str, mountpoint: Path, *extra: PathArg, log_file: Path | None = None
) -> Iterator[Mount]:
    """Mount ``store`` at ``mountpoint`` (created) with the real CLI; always unmount after.

    Fails with AssertionError naming the CLI's error when it cannot mount.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    log_file = log_file or mountpoint.with_name(mountpoint.name + ".log")
    try:
        start = time.perf_counter()
        result = run_tvixmount(
            "--log-file",
            log_file,
            "mount",
            mountpoint,
            "--store",
            store,
            *extra,
            timeout=_MOUNT_TIMEOUT,
        )
        startup = time.perf_counter() - start
        if result.returncode != 0:
            raise AssertionError(f"tvixmount mount failed ({result.returncode}): {result.stderr}")
        yield Mount(mountpoint, store, log_file, startup)
    finally:
        force_unmount(mountpoint)


@contextmanager
def foreground_server(
    store: str, mountpoint: Path, *extra: PathArg, **popen: Any
) -> Iterator[subprocess.Popen[Any]]:
    """``tvixmount mount --foreground`` started (``popen``: Popen's options), not waited for;
    always unmounted and reaped after."""
    proc = subprocess.Popen(
        tvixmount_command("mount", mountpoint, "--store", store, "--foreground", *extra),
        **popen,
    )
    try:
        yield proc
    finally:
        force_unmount(mountpoint)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@contextmanager
def foreground_mount(
    store: str,
    mountpoint: Path,
    *extra: PathArg,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``tvixmount mount --foreground`` (mountpoint created); yields once the mount answers."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    with foreground_server(
        store, mountpoint, *extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    ) as proc:
        deadline = time.monotonic() + _MOUNT_TIMEOUT
        while not tvixmount_at(str(mountpoint)) and proc.poll() is None:
            assert time.monotonic() < deadline, "the mount did not appear"
            time.sleep(0.05)
        assert proc.poll() is None, "the foreground mount exited early"
        os.statvfs(mountpoint)  # the loop answers
        yield proc


def leftovers(base: Path) -> tuple[list[str], list[int]]:
    """tvixmount mounts under ``base`` and serving processes whose arguments name a path there."""
    prefix = str(base.resolve())
    points = [p for p in tvixmount_mounts() if p.startswith(prefix)]
    pids = [
        pid
        for pid, arguments in serving_processes().items()
        if any(arg.startswith(prefix) for arg in arguments)
    ]
    return points, pids

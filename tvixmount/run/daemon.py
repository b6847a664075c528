"""The store's FUSE server for ``tvixmount run``: a child process inside the run's namespace.

Forked after the namespace is made, so its mount exists only there. It is
tied to the ``run`` process: it leaves the terminal's process group (a
Ctrl-C is for the command; the store must keep answering while the command
shuts down), the kernel sends it SIGTERM if ``run`` dies, even by SIGKILL,
and SIGTERM unmounts and ends it. Its stderr stays the caller's, for log
lines and the prefetch progress bar.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import MountError, TvixmountError
from ..fs.mount import MountOptions
from ..stores import Store
from .namespace import die_with_parent

log = logging.getLogger(__name__)

_STOP_WAIT = 10.0


@dataclass
class Daemon:
    pid: int
    status: int | None = None

    def exited(self) -> bool:
        """Whether the server has exited (reaping it if so)."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is not None

    def stop(self) -> None:
        """SIGTERM (it unmounts and exits), then wait; SIGKILL if it does not go."""
        if self.exited():
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_WAIT
        while not self.exited():
            if time.monotonic() > deadline:
                log.warning("the store's server (pid %d) did not stop; killing it", self.pid)
                os.kill(self.pid, signal.SIGKILL)
                _, self.status = os.waitpid(self.pid, 0)
                return
            time.sleep(0.01)


def _read_report(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 4096):
        parts.append(chunk)
    return b"".join(parts)


def start(
    mountpoint: str,
    open_store: Callable[[], Store],
    options: MountOptions,
    prefetch: int,
    progress: bool,
) -> Daemon:
    """Fork the server; return once its mount at ``mountpoint`` answers."""
    parent = os.getpid()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 1
        try:
            code = _serve(parent, write_fd, mountpoint, open_store, options, prefetch, progress)
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(write_fd)
    try:
        report = _read_report(read_fd)
    finally:
        os.close(read_fd)
    daemon = Daemon(pid)
    if report != b"ok":
        daemon.stop()
        raise MountError(report.decode(errors="replace") or "the store's server died")
    return daemon


def _serve(
    parent: int,
    report_fd: int,
    mountpoint: str,
    open_store: Callable[[], Store],
    options: MountOptions,
    prefetch: int,
    progress: bool,
) -> int:
    from ..mounting import serve_store

    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:
        return 1
    os.setsid()
    # Not the command's stdin and stdout: a reader waiting for their end must not
    # wait for this process.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    reported = False

    def ready() -> None:
        nonlocal reported
        os.write(report_fd, b"ok")
        os.close(report_fd)
        reported = True

    show = None
    if progress and sys.stderr.isatty():
        from .progress import show_progress  # rich: only for a terminal

        show = show_progress
    try:
        serve_store(open_store, mountpoint, options, ready, prefetch=prefetch, progress=show)
    except Exception as exc:
        if reported:
            log.exception("serving %s failed", mountpoint)
        else:
            message = str(exc) if isinstance(exc, TvixmountError) else f"cannot mount: {exc!r}"
            os.write(report_fd, message.encode())
        return 1
    return 0

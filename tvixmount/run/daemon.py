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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import MountError
from ..fs.mount import MountOptions
from ..storepath import StorePath
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


def start(
    mountpoint: str,
    open_store: Callable[[], Store],
    options: MountOptions,
    prefetch: int,
    progress: bool,
    hints: Sequence[StorePath],
) -> Daemon:
    """Fork the server; return once its mount at ``mountpoint`` answers.

    ``hints``: store paths the command names, prefetched from the start.
    """
    from ..mounting import fork_server, serve_store

    parent = os.getpid()

    def serve(ready: Callable[[], None]) -> None:
        die_with_parent(signal.SIGTERM)
        if os.getppid() != parent:
            raise MountError("tvixmount run exited before its store was mounted")
        os.setsid()
        # Not the command's stdin and stdout: a reader waiting for their end must
        # not wait for this process.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        show = None
        if progress and sys.stderr.isatty():
            from .progress import show_progress  # rich: only for a terminal

            show = show_progress
        serve_store(
            open_store, mountpoint, options, ready, prefetch=prefetch, progress=show, hints=hints
        )

    return Daemon(fork_server(serve, "the store's server"))

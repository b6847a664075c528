"""More processes serving the same binary cache, one per further CPU, for the embedded store.

One trio loop uses one core, and under load a process streaming NARs also
has narinfos waiting behind its NAR chunks. So the server starts workers:
each is the same ``tvixmount serve --http`` command, told by ``WORKER_ENV``
to serve the listening socket it inherited. A worker opens its own Store
from the same URL (the embedded store's SQLite database takes concurrent
readers) with its own narinfo cache; the kernel gives each new connection
to whichever process accepts it first, so a busy one takes fewer. Only the
embedded store: a ``memory://`` store is the process's own, and remote
stores' cache directories are not shared between processes.

Workers die with the server: it sends them SIGTERM when it stops (each then
finishes its responses in flight, as the server does) and the kernel sends
it should the server die without doing so (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
from collections.abc import Sequence

import trio

from ....errors import TvixmountError
from ....run.namespace import die_with_parent
from .http import GRACEFUL_SECONDS

log = logging.getLogger(__name__)

WORKER_ENV = "TVIXMOUNT_HTTP_WORKER"  # "FD:PID": the listening socket, the server's pid


def worker_count() -> int:
    """Workers to start beside the server's own loop: one per further CPU it may use.

    Not more: on 2 CPUs a third process made narinfo p99 worse (bench, 15 s
    mixed, alternating: 8.6/8.7 ms with one worker, 11.3/12.0 ms with two).
    """
    return len(os.sched_getaffinity(0)) - 1


def inherited_socket() -> socket.socket | None:
    """In a worker, the server's listening socket (and the worker dies with the server)."""
    value = os.environ.pop(WORKER_ENV, None)
    if value is None:
        return None
    fd, server = (int(part) for part in value.split(":"))
    die_with_parent(signal.SIGTERM)
    if os.getppid() != server:
        raise TvixmountError("the HTTP server this worker was started for has exited")
    return socket.socket(fileno=fd)


class Workers:
    """``count`` workers running ``argv`` on ``sock``, from :meth:`run` until :meth:`stop`."""

    def __init__(self, argv: Sequence[str], sock: socket.socket, count: int) -> None:
        self._argv = list(argv)
        self._sock = sock
        self._count = count
        self._stopping = trio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Start the workers, and once stopped, stop and reap them."""
        env = {**os.environ, WORKER_ENV: f"{self._sock.fileno()}:{os.getpid()}"}
        processes: list[subprocess.Popen[bytes]] = []
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self._count):
                    # Forked here, on the loop's (main) thread, not in a worker thread as
                    # trio.run_process does: PR_SET_PDEATHSIG fires when the forking
                    # *thread* ends, and trio's idle threads end after seconds.
                    process = subprocess.Popen(
                        self._argv,
                        env=env,
                        pass_fds=(self._sock.fileno(),),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                    )
                    processes.append(process)
                    nursery.start_soon(_watch, process)
                await self._stopping.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await _stop(processes)


async def _exited(process: subprocess.Popen[bytes]) -> int:
    # Once reaped, its pid is no longer its own (pidfd_open fails, or finds another process).
    if process.returncode is None:
        pidfd = os.pidfd_open(process.pid)
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
    return process.wait()


async def _watch(process: subprocess.Popen[bytes]) -> None:
    status = await _exited(process)
    # The others keep serving; the listening socket stays open in the server.
    log.error("an HTTP worker (pid %d) exited with status %d", process.pid, status)


async def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    with trio.move_on_after(GRACEFUL_SECONDS + 5):
        for process in processes:
            await _exited(process)
    for process in processes:
        if process.returncode is None:
            process.kill()
            process.wait()

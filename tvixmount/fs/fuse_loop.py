"""A cheaper wait for the next FUSE request than pyfuse3's own.

pyfuse3's worker tasks take turns waiting for the /dev/fuse descriptor to
become readable: each request costs a trio lock acquisition (which always
yields to the scheduler once) and a ``wait_readable`` (an epoll registration,
a park and a reschedule), on top of the handler itself. Measured on the bench
machine that was most of the ~60 us a trivial request costs, against ~11 us
for a C filesystem.

Requests often arrive while the previous one is handled (the kernel sends
RELEASE and FORGET without waiting, readahead READs come in batches, several
processes read at once), so before parking, the waiting worker asks the
kernel with one non-blocking ``poll`` whether a request is queued already,
and takes it at once if so. The turn-taking lock is only waited for when
another worker holds it. To stay fair to other trio tasks (thread
completions of slow reads, signal handling), every ``_FAIR_EVERY``-th
immediate take yields to the scheduler once.

pyfuse3 looks ``_wait_fuse_readable`` up by name in its module on every
loop iteration, which is the seam used here; if a pyfuse3 release renames
it, ``install`` does nothing and pyfuse3's own wait runs unchanged.
"""

from __future__ import annotations

import logging
import os
import select

import pyfuse3
import trio

log = logging.getLogger(__name__)

_HOOK = "_wait_fuse_readable"
_FAIR_EVERY = 32
# pyfuse3 counts its idle workers inside its own wait and starts another
# whenever none is idle; with this wait that count stays zero, so the pool
# grows to the cap and stays there. Each worker keeps its receive buffer
# resident (about 2.5 MiB of RSS each, measured: 2 workers 100 MiB, 8 120 MiB,
# 16 135 MiB after a million inodes were forgotten), so the cap is modest:
# requests that wait on the disk or network run in threads, and 8 in flight
# keep both cores and the disk busy.
WORKERS = 8


def _fuse_fd() -> int | None:
    """The /dev/fuse descriptor pyfuse3 opened (libfuse does not expose it)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                found.append(int(name))
        except OSError:
            continue
    return found[0] if len(found) == 1 else None


class _FastWait:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._lock = trio.Lock()
        self._immediate = 0
        self.closed = False

    async def __call__(self) -> bool:
        if self._lock.locked():
            await self._lock.acquire()
        else:
            self._lock.acquire_nowait()
        try:
            if self.closed:
                return False
            if self._poll.poll(0):
                self._immediate += 1
                if self._immediate % _FAIR_EVERY == 0:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return True
            await trio.lowlevel.wait_readable(self._fd)
            return True
        except trio.ClosedResourceError:  # pyfuse3.terminate() closed the session
            return False
        finally:
            self._lock.release()


_installed: _FastWait | None = None


def install() -> bool:
    """Replace pyfuse3's wait (call after ``pyfuse3.init``); True if installed."""
    global _installed
    if not callable(getattr(pyfuse3, _HOOK, None)):
        log.debug("pyfuse3 has no %s; keeping its own request loop", _HOOK)
        return False
    fd = _fuse_fd()
    if fd is None:
        log.debug("cannot identify the /dev/fuse descriptor; keeping pyfuse3's loop")
        return False
    _installed = _FastWait(fd)
    setattr(pyfuse3, _HOOK, _installed)
    return True


def terminate() -> None:
    """``pyfuse3.terminate``, also releasing workers waiting for their turn.

    pyfuse3's own wait checks the session's exit flag, which is not
    reachable from Python; the flag here stands in for it.
    """
    if _installed is not None:
        _installed.closed = True
    pyfuse3.terminate()


async def main() -> None:
    """``pyfuse3.main``, with the worker pool this wait needs when it is installed."""
    if _installed is None:
        await pyfuse3.main()
    else:
        await pyfuse3.main(min_tasks=1, max_tasks=WORKERS)

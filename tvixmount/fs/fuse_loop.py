"""A cheaper wait for the next FUSE request than pyfuse3's own.

pyfuse3's worker tasks take turns waiting for the /dev/fuse descriptor to
become readable: each request costs a trio lock hand-over to the next worker
(a park and a reschedule) and a ``wait_readable`` (an epoll registration, a
park, a trip through trio's run loop and a reschedule). Measured on the bench
machine with a handler that does nothing, a LOOKUP took 35 us from the kernel
sending it to the reply, against 18 us for squashfuse doing real work; with
the worker simply taking the next request when it is there, 10 us.

So this wait keeps three rules:

- **The reader keeps its turn.** The worker that took the last request and
  handled it without yielding (the usual case: lookups, getattr and reads
  served from memory) takes the next one too, with no hand-over. Other
  workers stay parked. When a request is taken, one parked worker is put on
  standby (made runnable); it runs only if the reader's handler yields to
  trio before it is done (a read in a thread, say), and then takes over the
  turn, so a slow request never holds up the others. If the reader comes
  back first, the standby parks again when it gets to run.
- **A queued request is taken at once**, with one non-blocking ``poll``.
- **Before parking, the reader polls for a moment** (``SPIN_NS``). A process
  working through files sends its next request a few microseconds after the
  last reply; catching it here costs a few polls, where parking and waking
  through trio's run loop costs about 25 us per request. The reader spins
  only while no other request is being handled (so a reply waiting on a
  thread is not held up), and never longer than ``SPIN_NS``.

To stay fair to other trio tasks (thread completions of slow reads, signal
handling), every ``_FAIR_EVERY``-th immediate take yields to the scheduler
once.

pyfuse3 looks ``_wait_fuse_readable`` up by name in its module on every
loop iteration, which is the seam used here; if a pyfuse3 release renames
it, ``install`` does nothing and pyfuse3's own wait runs unchanged.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import time

import pyfuse3
import trio

log = logging.getLogger(__name__)

_HOOK = "_wait_fuse_readable"
_FAIR_EVERY = 32
SPIN_NS = 50_000
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
        # The worker whose turn it is to read.
        self._reader: trio.lowlevel.Task | None = None
        self._spares: collections.deque[trio.lowlevel.Task] = collections.deque()
        self._standby: trio.lowlevel.Task | None = None
        # Workers that took a request and have not come back for the next one.
        self._handling: set[trio.lowlevel.Task] = set()
        self._immediate = 0
        self._closed = False

    async def __call__(self) -> bool:
        me = trio.lowlevel.current_task()
        self._handling.discard(me)
        while not self._closed:
            reader = self._reader
            # A reader still handling its request is waiting on something:
            # this worker takes the turn over.
            if reader is None or reader is me or reader in self._handling:
                break
            await self._park(me)
        if self._closed:
            return False
        self._reader = me
        try:
            if self._queued():
                self._immediate += 1
                if self._immediate % _FAIR_EVERY == 0:
                    await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                await trio.lowlevel.wait_readable(self._fd)
        except trio.ClosedResourceError:  # pyfuse3.terminate() closed the session
            return False
        except BaseException:
            self._give_up_turn()
            raise
        self._handling.add(me)
        self._wake_one()
        return True

    def _queued(self) -> bool:
        """Whether a request is waiting, polling for up to ``SPIN_NS`` if none is in hand."""
        poll = self._poll.poll
        if poll(0):
            return True
        if self._handling:
            return False
        clock = time.perf_counter_ns
        deadline = clock() + SPIN_NS
        while clock() < deadline:
            if poll(0):
                return True
        return False

    async def _park(self, me: trio.lowlevel.Task) -> None:
        self._spares.append(me)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._spares.remove(me)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if self._standby is me:
            self._standby = None

    def _give_up_turn(self) -> None:
        """The reader is leaving (cancelled): hand the turn to a parked worker."""
        self._reader = None
        self._wake_one()

    def _wake_one(self) -> None:
        """Put a parked worker on standby, if none is."""
        if self._standby is None and self._spares:
            self._standby = self._spares.popleft()
            trio.lowlevel.reschedule(self._standby)

    def close(self) -> None:
        """Stop: every parked worker wakes and returns False."""
        self._closed = True
        while self._spares:
            trio.lowlevel.reschedule(self._spares.popleft())


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
    if getattr(pyfuse3, "RECEIVE_RETRIES_EAGAIN", False):
        # pyfuse3 reads a request once the fd polled readable; the kernel may
        # withdraw it meanwhile (its process killed), and a blocking read then
        # stalls the whole loop, signals included, until the next request. A
        # pyfuse3 with tvixmount's patch (patches/) retries on EAGAIN instead.
        os.set_blocking(fd, False)
    _installed = _FastWait(fd)
    setattr(pyfuse3, _HOOK, _installed)
    return True


def terminate() -> None:
    """``pyfuse3.terminate``, also releasing workers waiting for their turn.

    pyfuse3's own wait checks the session's exit flag, which is not
    reachable from Python; the flag here stands in for it.
    """
    if _installed is not None:
        _installed.close()
    pyfuse3.terminate()


async def main() -> None:
    """``pyfuse3.main``, with the worker pool this wait needs when it is installed."""
    if _installed is None:
        await pyfuse3.main()
    else:
        await pyfuse3.main(min_tasks=1, max_tasks=WORKERS)

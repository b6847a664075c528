"""The worker threads of remote fetches: a limiter of their own.

Blocking work for a binary cache (reading a cache directory that may sit
on a hung NFS server, decompressing) must never take the tokens of trio's
default thread limiter: local reads need those, and 40 stuck fetches
holding them made reads of files already cached and verified fail too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

_R = TypeVar("_R")

# Enough for the fetches a mount runs at once; more wait their turn. Only for jobs
# that end on their own (a read, a hash), never for one that waits on the trio side.
REMOTE_THREADS = trio.CapacityLimiter(16)
# A decompressing stream holds its worker thread for as long as it lasts, waiting for
# compressed chunks that REMOTE_THREADS jobs read. On REMOTE_THREADS itself, 16 NAR
# fetches at once (--prefetch 16, or 8 prefetches and 8 lookups) held every token and
# waited forever for a read. A NAR's decompression may in turn wait on its HTTP body's
# Content-Encoding being decoded: each stage has a limiter of its own.
BODY_DECODE_THREADS = trio.CapacityLimiter(16)
NAR_DECODE_THREADS = trio.CapacityLimiter(16)


async def run_remote(fn: Callable[[], _R]) -> _R:
    """``fn()`` in a worker thread on :data:`REMOTE_THREADS`; cancelling abandons it."""
    return await trio.to_thread.run_sync(fn, limiter=REMOTE_THREADS, abandon_on_cancel=True)


__all__ = ["BODY_DECODE_THREADS", "NAR_DECODE_THREADS", "REMOTE_THREADS", "run_remote"]

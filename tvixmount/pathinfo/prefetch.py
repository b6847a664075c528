"""Closure prefetch: a PathInfoService layer that fetches a path's references in the background.

A build looks its inputs up one after another, and on a binary cache every
first lookup is a narinfo plus a whole NAR fetched before the answer. The
references of a path are known as soon as its PathInfo is, so once a path is
looked up its closure can be on its way, several paths at a time, while the
build is still busy with the first one.

Contract: ``get`` answers exactly as the service below does. Every fetch this
layer starts runs as a task in the nursery of :meth:`ClosurePrefetcher.run`,
which the mount runs for as long as it serves: nothing outlives the mount. A
path is asked for once: a lookup of a path whose prefetch is queued or in
flight joins it (a queued one starts at once, ahead of the queue), and a
prefetched answer is kept for the first lookup to take it, so a store with no
cache of its own (gRPC) is not asked twice. At most ``parallel`` prefetches
run at a time; lookups never wait for that limit. Without :meth:`run` (a
command that serves nothing) the layer only passes lookups through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import trio

from ..errors import StoreError
from ..storepath import StorePath
from .model import PathInfo
from .service import PathInfoService

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 8


@dataclass
class PrefetchStats:
    """Counts since the mount started; a progress display reads them."""

    scheduled: int = 0  # references queued for a prefetch
    fetched: int = 0
    failed: int = 0
    running: int = 0

    @property
    def finished(self) -> int:
        return self.fetched + self.failed

    @property
    def busy(self) -> bool:
        return self.finished < self.scheduled


class _Flight:
    """One lookup of a path, queued or in progress; later lookups wait for it."""

    def __init__(self, store_path: StorePath | None) -> None:
        self.store_path = store_path  # None: a lookup by digest alone
        self.started = False
        self.taken = False  # a lookup waits for the answer: do not keep it
        self.done = trio.Event()
        self.result: PathInfo | None = None
        self.error: StoreError | None = None


class ClosurePrefetcher:
    """A PathInfoService that prefetches the references of every path looked up."""

    def __init__(
        self,
        inner: PathInfoService,
        parallel: int = DEFAULT_PARALLEL,
        hints: Iterable[StorePath] = (),
    ) -> None:
        """``hints``: paths known to be wanted soon (a command's arguments); their closures
        are prefetched as soon as :meth:`run` starts, before any lookup."""
        if parallel < 1:
            raise ValueError("a prefetcher needs at least one fetch at a time")
        self._inner = inner
        self._parallel = parallel
        self._hints = tuple(hints)
        self._nursery: trio.Nursery | None = None
        self._limiter: trio.CapacityLimiter | None = None
        self._seen: set[bytes] = set()  # every digest asked for, by a lookup or a prefetch
        self._flights: dict[bytes, _Flight] = {}
        self._ready: dict[bytes, PathInfo] = {}  # prefetched, not yet looked up
        self._busy_since = (0.0, 0, 0)  # when prefetches last started, finished and failed then
        self.stats = PrefetchStats()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run prefetches until cancelled; start this in the mount's nursery."""
        self._limiter = trio.CapacityLimiter(self._parallel)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._schedule(self._hints, "named by the command")
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def get(self, digest: bytes) -> PathInfo | None:
        ready = self._ready.pop(digest, None)
        if ready is not None:
            return ready
        flight = self._flights.get(digest)
        if self._nursery is None or (flight is None and digest in self._seen):
            # Not running (yet, or any more), or expanded once already: the kernel
            # forgot the entry and asks again.
            return await self._inner.get(digest)
        if flight is None:
            self._seen.add(digest)
            flight = self._flights[digest] = _Flight(None)
        if not flight.started:
            self._start(digest, flight)
        flight.taken = True
        await flight.done.wait()
        if flight.error is not None:
            raise type(flight.error)(str(flight.error))
        return flight.result

    def _start(self, digest: bytes, flight: _Flight) -> None:
        assert self._nursery is not None
        flight.started = True
        self._nursery.start_soon(self._resolve, digest, flight)

    async def _resolve(self, digest: bytes, flight: _Flight) -> None:
        """Ask the service below; never raises (a failure is the flight's answer)."""
        started = time.monotonic()
        prefetch = flight.store_path is not None
        if prefetch:
            self.stats.running += 1
        try:
            flight.result = await self._inner.get(digest)
        except StoreError as exc:
            flight.error = exc
        except Exception as exc:
            log.exception("prefetch: lookup of %s failed", flight.store_path or digest.hex())
            flight.error = StoreError(f"internal error: {exc!r}")
        finally:
            del self._flights[digest]
            flight.done.set()
            if prefetch:
                self.stats.running -= 1
        if prefetch:
            self._count(flight, time.monotonic() - started)
        if flight.result is not None:
            if not flight.taken:
                self._ready[digest] = flight.result
            info = flight.result
            self._schedule(info.reference_paths, f"a reference of {info.store_path}")

    def _count(self, flight: _Flight, seconds: float) -> None:
        stats = self.stats
        if flight.error is not None:
            stats.failed += 1
            log.warning("prefetch of %s failed: %s", flight.store_path, flight.error)
        else:
            stats.fetched += 1
            log.debug(
                "prefetched %s in %.2fs (%d of %d)",
                flight.store_path,
                seconds,
                stats.finished,
                stats.scheduled,
            )
        if not stats.busy:
            since, finished, failed = self._busy_since
            log.info(
                "prefetched %d paths (%d failed) in %.2fs",
                stats.finished - finished,
                stats.failed - failed,
                time.monotonic() - since,
            )

    def _schedule(self, store_paths: Iterable[StorePath], why: str) -> None:
        for reference in store_paths:
            digest = reference.digest
            if digest in self._seen:
                continue
            self._seen.add(digest)
            flight = self._flights[digest] = _Flight(reference)
            if not self.stats.busy:
                self._busy_since = (time.monotonic(), self.stats.finished, self.stats.failed)
            self.stats.scheduled += 1
            log.debug("prefetch: %s (%s)", reference, why)
            assert self._nursery is not None
            self._nursery.start_soon(self._prefetch, digest, flight)

    async def _prefetch(self, digest: bytes, flight: _Flight) -> None:
        assert self._limiter is not None
        async with self._limiter:
            if not flight.started:
                flight.started = True
                await self._resolve(digest, flight)

    async def put(self, info: PathInfo) -> PathInfo:
        return await self._inner.put(info)

    async def list(self) -> AsyncIterator[PathInfo]:
        async for info in self._inner.list():
            yield info

    async def aclose(self) -> None:
        await self._inner.aclose()

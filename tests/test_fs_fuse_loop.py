"""The request wait that replaces pyfuse3's: tried on a pipe standing in for /dev/fuse."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyfuse3
import pytest
import trio
import trio.testing

from tvixmount.fs import fuse_loop


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


class _Steps(trio.abc.Instrument):
    """Counts how often the scheduler resumes one task: each yield costs one step."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


async def _yields_during(wait: fuse_loop._FastWait) -> int:
    steps = _Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        assert await wait() is True
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.count


async def test_a_queued_request_is_taken_without_yielding(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = fuse_loop._FastWait(r)
    os.write(w, b"request")
    assert await _yields_during(wait) == 0


async def test_waits_until_a_request_arrives(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = fuse_loop._FastWait(r)
    woke: list[bool] = []

    async def waiter() -> None:
        woke.append(await wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        os.write(w, b"request")
    assert woke == [True]


async def test_workers_take_turns_on_the_descriptor(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = fuse_loop._FastWait(r)
    results: list[bool] = []

    async def worker() -> None:
        if await wait():
            os.read(r, 1)  # the request is consumed before the next turn
            results.append(True)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(worker)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(3):
            os.write(w, b"x")
            await trio.testing.wait_all_tasks_blocked()
    assert results == [True, True, True]


async def test_every_so_many_immediate_takes_yield_once(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = fuse_loop._FastWait(r)
    os.write(w, b"x")
    yields = [await _yields_during(wait) for _ in range(fuse_loop._FAIR_EVERY)]
    assert yields == [0] * (fuse_loop._FAIR_EVERY - 1) + [1]


async def test_closing_wakes_the_waiter_and_stops_the_others(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    wait = fuse_loop._FastWait(r)
    results: list[bool] = []

    async def worker() -> None:
        results.append(await wait())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(worker)
        await trio.testing.wait_all_tasks_blocked()
        wait.closed = True
        trio.lowlevel.notify_closing(r)
    assert results == [False, False, False]


def test_install_needs_the_pyfuse3_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(pyfuse3, fuse_loop._HOOK)
    assert fuse_loop.install() is False


def test_install_needs_a_fuse_descriptor() -> None:
    # This test process has no /dev/fuse open, so pyfuse3's wait stays.
    before = getattr(pyfuse3, fuse_loop._HOOK)
    assert fuse_loop.install() is False
    assert getattr(pyfuse3, fuse_loop._HOOK) is before

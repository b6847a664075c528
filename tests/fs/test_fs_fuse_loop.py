"""The request wait that replaces pyfuse3's: tried on a pipe standing in for /dev/fuse."""

from __future__ import annotations

import os
import select
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
        wait.close()
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


async def test_the_reader_keeps_its_turn_while_its_handlers_do_not_yield(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    wait = fuse_loop._FastWait(r)
    taken: list[str] = []

    async def worker(name: str) -> None:
        while await wait():
            os.read(r, 1)
            taken.append(name)

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            nursery.start_soon(worker, name)
        await trio.testing.wait_all_tasks_blocked()
        os.write(w, b"x" * 10)
        await trio.testing.wait_all_tasks_blocked()
        wait.close()
        trio.lowlevel.notify_closing(r)
    # With turn-taking per request the three workers would alternate.
    assert len(taken) == 10
    assert len(set(taken)) == 1


async def test_a_handler_that_yields_hands_the_turn_to_another_worker(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    wait = fuse_loop._FastWait(r)
    release = trio.Event()
    taken: list[tuple[str, bytes]] = []

    async def worker(name: str) -> None:
        while await wait():
            request = os.read(r, 1)
            taken.append((name, request))
            if request == b"1":
                await release.wait()  # a handler waiting on a thread, say

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, "a")
        nursery.start_soon(worker, "b")
        await trio.testing.wait_all_tasks_blocked()
        os.write(w, b"1")
        await trio.testing.wait_all_tasks_blocked()
        os.write(w, b"2")
        await trio.testing.wait_all_tasks_blocked()
        # The second request is taken while the first is still being handled.
        assert [req for _, req in taken] == [b"1", b"2"]
        assert taken[0][0] != taken[1][0]
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        wait.close()
        trio.lowlevel.notify_closing(r)


class _ScriptedPoll:
    """A poll that reports the descriptor ready only on its ``ready_on``-th call."""

    def __init__(self, fd: int, ready_on: int) -> None:
        self.fd = fd
        self.ready_on = ready_on
        self.calls = 0

    def poll(self, timeout: int) -> list[tuple[int, int]]:
        assert timeout == 0
        self.calls += 1
        return [(self.fd, select.POLLIN)] if self.calls == self.ready_on else []


async def test_the_reader_polls_a_moment_before_parking(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"x")  # so that a wait without polling returns too, after a yield
    wait = fuse_loop._FastWait(r)
    scripted = _ScriptedPoll(r, ready_on=5)
    wait._poll = scripted  # type: ignore[assignment]
    assert await _yields_during(wait) == 0
    assert scripted.calls == 5


async def test_no_polling_while_another_request_is_in_hand(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = fuse_loop._FastWait(r)
    os.write(w, b"1")
    release = trio.Event()
    scripted = _ScriptedPoll(r, ready_on=0)  # never ready

    async def first() -> None:
        assert await wait()
        os.read(r, 1)
        wait._poll = scripted  # type: ignore[assignment]
        await release.wait()

    async def second() -> None:
        assert await wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert scripted.calls == 1  # one look, then parked in wait_readable
        os.write(w, b"2")
        release.set()


async def test_a_cancelled_reader_hands_its_turn_on(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = fuse_loop._FastWait(r)
    taken: list[str] = []

    async def worker(name: str, scope: trio.CancelScope) -> None:
        with scope:
            if await wait():
                os.read(r, 1)
                taken.append(name)

    first, second = trio.CancelScope(), trio.CancelScope()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "first", first)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(worker, "second", second)
            await trio.testing.wait_all_tasks_blocked()
            first.cancel()
            await trio.testing.wait_all_tasks_blocked()
            os.write(w, b"x")
    assert taken == ["second"]

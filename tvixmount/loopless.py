"""Driving a coroutine without an event loop, for work whose awaits all complete inline.

Importing trio costs 90 ms, a quarter of a ``copy`` of a 50 MB path from
the embedded store to a ``file://`` cache (Nix does that copy in 0.35 s).
Every await on that path completes on the calling thread (SQLite, local
files), so :func:`run` drives the coroutine with one ``send`` and no loop
at all. Code on such a path asks :func:`active` and then does inline, on
its own threads, what it hands to trio otherwise (:func:`to_thread`); an
await that still suspends is a bug, reported as :class:`RuntimeError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

_T = TypeVar("_T")
_ACTIVE: ContextVar[bool] = ContextVar("loopless", default=False)


def active() -> bool:
    """Whether the running coroutine is driven by :func:`run` (no event loop)."""
    return _ACTIVE.get()


def run(fn: Callable[..., Awaitable[_T]], *args: object) -> _T:
    """``fn(*args)`` run to completion on this thread, without an event loop."""
    token = _ACTIVE.set(True)
    try:
        waiting = fn(*args).__await__()
        try:
            yielded = waiting.send(None)
        except StopIteration as done:
            result: _T = done.value
            return result
        waiting.close()
        raise RuntimeError(f"{fn!r} waited for an event loop ({yielded!r}) and there is none")
    finally:
        _ACTIVE.reset(token)


async def to_thread(fn: Callable[..., _T], *args: object) -> _T:
    """``fn(*args)`` in a trio worker thread; inline (blocking) when no loop runs."""
    if active():
        return fn(*args)
    import trio  # a loop-less run never imports it

    return await trio.to_thread.run_sync(fn, *args)


__all__ = ["active", "run", "to_thread"]

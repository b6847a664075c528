"""gRPC plumbing shared by the three gRPC clients.

One :class:`GrpcTransport` per store URL owns the channel. Every call runs in
a worker thread (``trio.to_thread.run_sync(..., abandon_on_cancel=True)``):
grpc's synchronous API blocks, and a slow or dead server must never stall the
trio loop that also serves FUSE requests. Those threads come from the
transport's own :class:`trio.CapacityLimiter`, never trio's default one that
local reads (a cache on disk) need: hung remote calls can use up only their
own share. A call whose caller gives up (a FUSE request past its deadline) is
cancelled at the grpc level too, so its thread stops reading and comes back
at once instead of when grpc's own deadline expires.

Transient failures (UNAVAILABLE, DEADLINE_EXCEEDED of a unary call) are
retried a bounded number of times with exponential backoff; the retry sleeps
happen on the trio side so they stay cancellable. Other statuses become the
project's exceptions (:mod:`.status`) with the URL in the message.

URL forms: ``grpc+http://HOST:PORT`` and ``grpc+unix:///PATH``, optionally
with ``?timeout=SECONDS&retries=N`` (per-call timeout of unary calls, number
of retries after the first attempt).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import grpc
import trio

from ...errors import StoreError, StoreURLError
from .status import error_of

log = logging.getLogger(__name__)

T = TypeVar("T")

# Large enough for any Directory or PathInfo message (a Directory of 300,000
# entries) and for 1 MiB blob chunks; grpc's 4 MiB default would reject big
# directories, and a bigger bound lets one hostile message cost that much memory.
MAX_MESSAGE_BYTES = 64 << 20
REMOTE_THREADS = 32  # remote calls in flight at once, per store

_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # grpc's default reconnect backoff grows to 120 s; a restarted server
    # must be usable again within our own retry budget.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(frozen=True)
class CallPolicy:
    """Timeouts and retry budget of every call made through one transport."""

    timeout: float = 10.0  # seconds, unary calls and small streams
    stream_timeout: float = 600.0  # seconds, a whole blob or a recursive listing
    retries: int = 4  # further attempts after the first, transient errors only
    backoff: float = 0.1  # first retry delay; doubles per attempt
    max_backoff: float = 2.0


def parse_grpc_url(url: str) -> tuple[str, CallPolicy]:
    """``grpc+http://HOST:PORT`` / ``grpc+unix:///PATH`` -> (grpc target, policy)."""
    parts = urlsplit(url)
    if parts.scheme == "grpc+http":
        try:
            port = parts.port
        except ValueError:
            raise StoreURLError(f"invalid port in gRPC store URL {url!r}") from None
        if not parts.hostname or port is None:
            raise StoreURLError(
                f"gRPC store URL {url!r} needs a host and port: grpc+http://HOST:PORT"
            )
        if parts.path not in ("", "/"):
            raise StoreURLError(f"gRPC store URL {url!r} must not have a path")
        target = parts.netloc
    elif parts.scheme == "grpc+unix":
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise StoreURLError(
                f"gRPC store URL {url!r} must name an absolute socket path: grpc+unix:///PATH"
            )
        target = f"unix:{parts.path}"
    else:
        raise StoreURLError(f"not a gRPC store URL: {url!r}")
    return target, _parse_policy(url, parts.query)


def _parse_policy(url: str, query: str) -> CallPolicy:
    policy = CallPolicy()
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in ("timeout", "retries"):
            raise StoreURLError(
                f"unknown parameter {key!r} in gRPC store URL {url!r} (known: timeout, retries)"
            )
        value = values[-1]
        try:
            if key == "timeout":
                seconds = float(value)
                if not seconds > 0:
                    raise ValueError(value)
                policy = replace(policy, timeout=seconds)
            else:
                count = int(value)
                if count < 0:
                    raise ValueError(value)
                policy = replace(policy, retries=count)
        except ValueError:
            raise StoreURLError(f"invalid {key}={value!r} in gRPC store URL {url!r}") from None
    return policy


class Ticket:
    """What one attempt of a call may take (``timeout``) and how to cancel it.

    The worker thread registers the grpc call object it started with
    :meth:`track`; the trio side cancels it when the caller gives up.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._calls: list[Any] = []
        self._cancelled = False

    def track(self, call: T) -> T:
        with self._lock:
            self._calls.append(call)
            cancelled = self._cancelled
        if cancelled:
            call.cancel()  # type: ignore[attr-defined]
        return call

    def unary(self, method: Any, request: Any) -> Any:
        """Call a stub ``method`` with one answer (``request`` a message, or an iterator of
        them for a client-streaming Put) with this attempt's timeout, tracked; its answer."""
        return self.track(method.future(request, timeout=self.timeout)).result()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            calls = list(self._calls)
        for call in calls:
            call.cancel()


class GrpcTransport:
    """A channel plus the call discipline (threads, timeouts, retries, error mapping)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.target, self.policy = parse_grpc_url(url)
        self.channel: Any = grpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        self.limiter = trio.CapacityLimiter(REMOTE_THREADS)

    def connect(self) -> None:
        """Connect now (blocking), so an unreachable store is reported when it is opened.

        Fails at the first failed connection attempt rather than waiting out
        grpc's reconnect backoff; closes the channel before raising.
        """
        settled: list[Any] = []
        done = threading.Event()
        final = (
            grpc.ChannelConnectivity.READY,
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN,
        )

        def watch(state: Any) -> None:
            if state in final:
                settled.append(state)
                done.set()

        self.channel.subscribe(watch, try_to_connect=True)
        try:
            done.wait(self.policy.timeout)
        finally:
            self.channel.unsubscribe(watch)
        if settled and settled[0] == grpc.ChannelConnectivity.READY:
            return
        self.close()
        why = "connection failed" if settled else f"no connection within {self.policy.timeout:g}s"
        raise StoreError(f"gRPC store {self.url} is unreachable: {why}")

    async def call(
        self,
        what: str,
        fn: Callable[[Ticket], T],
        *,
        stream: bool = False,
        limiter: trio.CapacityLimiter | None = None,
    ) -> T:
        """Run ``fn(ticket)`` (which makes one gRPC call) in a worker thread.

        ``fn`` passes ``ticket.timeout`` to grpc and the call object to
        ``ticket.track`` (calls with one answer: :meth:`Ticket.unary` does both), so a
        cancelled caller cancels the call. ``what`` names the operation for
        error messages; ``limiter`` replaces the transport's own (the blob
        client has one, so hung blob reads leave lookups their threads).
        NOT_FOUND raises :class:`NotFoundError` (callers turn
        it into "absent"); ``fn`` must be safe to repeat, since transient
        failures run it again.
        """
        timeout = self.policy.stream_timeout if stream else self.policy.timeout
        delay = self.policy.backoff
        attempts = self.policy.retries + 1
        for attempt in range(1, attempts + 1):
            ticket = Ticket(timeout)
            try:
                return await trio.to_thread.run_sync(
                    fn, ticket, abandon_on_cancel=True, limiter=limiter or self.limiter
                )
            except grpc.RpcError as exc:
                code = _code_of(exc)
                # A stream that ran out of its (long) deadline would only do so again.
                transient = code == grpc.StatusCode.UNAVAILABLE or (
                    code == grpc.StatusCode.DEADLINE_EXCEEDED and not stream
                )
                if transient and attempt < attempts:
                    log.debug("%s via %s: %s, retrying in %.1fs", what, self.url, code, delay)
                    await trio.sleep(delay)
                    delay = min(delay * 2, self.policy.max_backoff)
                    continue
                raise self._error(what, code, _details_of(exc), attempt, timeout) from None
            except BaseException:
                ticket.cancel()  # the caller gave up (or the call broke): stop reading
                raise
        raise AssertionError("the retry loop always returns or raises")

    def _error(
        self, what: str, code: Any, details: str, attempts: int, timeout: float
    ) -> Exception:
        where = f"gRPC store {self.url}"
        if code == grpc.StatusCode.UNAVAILABLE:
            return StoreError(
                f"{what}: {where} is unreachable ({attempts} attempts): {details or 'unavailable'}"
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return StoreError(
                f"{what}: {where} did not answer within {timeout:g}s ({attempts} attempts)"
            )
        return error_of(code, details, what, where)

    def close(self) -> None:
        self.channel.close()


def _code_of(exc: grpc.RpcError) -> Any:
    code = getattr(exc, "code", None)
    return code() if callable(code) else grpc.StatusCode.UNKNOWN


def _details_of(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else None
    return str(text) if text else ""


__all__ = [
    "MAX_MESSAGE_BYTES",
    "REMOTE_THREADS",
    "CallPolicy",
    "GrpcTransport",
    "Ticket",
    "parse_grpc_url",
]

"""A small HTTP/1.1 server on trio: httptools (llhttp) parses, a handler answers.

Why not an ASGI server: hypercorn (h11, pure Python) cost about 400 us of
CPU per narinfo on these cores, most of it parsing and ASGI plumbing, which
put a narinfo's p99 at 40-50 ms with 32 clients. Here a request is parsed in
C and answered with one ``send`` of pre-rendered bytes.

What it does: keep-alive (HTTP/1.1, and HTTP/1.0 when asked) with
pipelined requests answered in order; idle connections closed after
``KEEP_ALIVE_SECONDS``; streamed bodies sent as they come, with
Content-Length when known, else chunked (HTTP/1.1) or ended by closing;
a stream that fails after its first byte drops the connection, so a client
sees a broken transfer, never a complete wrong body. :meth:`Server.stop`
stops accepting, closes idle connections and gives responses in flight
``GRACEFUL_SECONDS`` to finish.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools
import trio

from ....errors import TvixmountError

log = logging.getLogger(__name__)

GRACEFUL_SECONDS = 5.0
KEEP_ALIVE_SECONDS = 75.0  # nginx's default; Nix reuses a connection across many paths
_RECEIVE_BYTES = 64 << 10
# A NAR goes out in slices of this, each a turn of the loop: in 1 MiB pieces,
# the NAR streams took most turns' time and narinfos waited (bench: p99 16 ms
# with 4 MiB slices, 9-11 ms with 256 KiB, at 1.5x the static server's NAR MB/s).
_SEND_SLICE = 256 << 10
# Requests are GETs of short paths: what does not end by then is not one.
_MAX_REQUEST_BYTES = 64 << 10
_MAX_PIPELINED = 64  # parsed requests waiting for an answer before the server stops reading
# Out of descriptors or memory: waiting a little may free some (as trio.serve_listeners).
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
# A connection that failed before it was accepted (as trio.SocketListener ignores them).
_ACCEPT_IGNORE = {errno.ECONNABORTED, errno.EPERM, errno.EPROTO}
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}


@dataclass(slots=True)
class Request:
    method: str
    path: bytes  # the raw target up to any '?', before percent-decoding
    query: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    http_version: str
    keep_alive: bool

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None  # sent instead of body
    length: int | None = None  # the stream's, when known (else chunked)

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain") -> Response:
        return cls(status, [(b"content-type", content_type.encode())], text.encode())

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        """A plain-text error: ``message`` and a newline."""
        return cls.text(status, message + "\n")


Handler = Callable[[Request], Awaitable[Response]]


class _Parsed:
    """httptools' callbacks: the requests of one connection, parsed and not yet answered."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.ready: list[Request] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_message_complete(self) -> None:
        parser = self.parser
        path, _, query = self._url.partition(b"?")
        self.ready.append(
            Request(
                parser.get_method().decode("ascii", "replace"),
                path,
                query,
                self._headers,
                parser.get_http_version(),
                parser.should_keep_alive(),
            )
        )


class _Date:
    """The Date header's value, formatted once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode()
        return self._value


class _Connection:
    """An accepted socket: trio's own socket calls, without SocketStream's layers (a
    tenth of a narinfo's CPU), and the scope that cancels it while idle."""

    def __init__(self, sock: trio.socket.SocketType, address: Any) -> None:
        self.sock = sock
        self.scope = trio.CancelScope()
        self.peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else "-"

    async def send_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[await self.sock.send(view) :]


class Server:
    """Answers HTTP on the listening socket ``sock`` with ``handler`` until :meth:`stop`."""

    def __init__(self, sock: socket.socket, handler: Handler, *, access_log: bool) -> None:
        self._sock = trio.socket.from_stdlib_socket(sock)
        self._handler = handler
        self._access_log = logging.getLogger("tvixmount.http.access") if access_log else None
        self._date = _Date()
        self._stopping = trio.Event()
        self._idle: set[trio.CancelScope] = set()

    def stop(self) -> None:
        self._stopping.set()

    async def serve(self) -> None:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptor:
                acceptor.start_soon(self._accept, connections)
                await self._stopping.wait()
                acceptor.cancel_scope.cancel()
            self._sock.close()
            for scope in self._idle:
                scope.cancel()
            connections.cancel_scope.deadline = trio.current_time() + GRACEFUL_SECONDS

    async def _accept(self, connections: trio.Nursery) -> None:
        while True:
            try:
                sock, address = await self._sock.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_IGNORE:
                    continue
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                log.error("accepting a connection: %s", exc)
                await trio.sleep(0.1)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connections.start_soon(self._connection, _Connection(sock, address))

    async def _connection(self, conn: _Connection) -> None:
        parsed = _Parsed()
        # The keep-alive timeout, and stop(), cancel this while the connection is idle.
        with conn.sock, conn.scope:
            try:
                while not self._stopping.is_set():
                    if not parsed.ready and not await self._receive(conn, parsed):
                        return
                    request = parsed.ready.pop(0)
                    if not await self._answer(conn, request) or not request.keep_alive:
                        return
            except OSError:
                pass  # the client hung up
            except Exception:
                # A bug answering one request closes its connection, not the server.
                log.exception("answering %s", conn.peer)

    async def _receive(self, conn: _Connection, parsed: _Parsed) -> bool:
        """Read until a whole request is parsed; False when the connection should close."""
        received = 0
        while not parsed.ready:
            if self._stopping.is_set():
                return False
            # A deadline moved on an existing scope costs less than a new scope a request.
            conn.scope.deadline = trio.current_time() + KEEP_ALIVE_SECONDS
            self._idle.add(conn.scope)
            try:
                data = await conn.sock.recv(_RECEIVE_BYTES)
            finally:
                self._idle.discard(conn.scope)
                conn.scope.deadline = math.inf
            if not data:
                return False
            received += len(data)
            if received > _MAX_REQUEST_BYTES:
                await self._refuse(conn, "request too large")
                return False
            try:
                parsed.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                await self._refuse(conn, "protocol upgrades are not served")
                return False
            except httptools.HttpParserError:
                await self._refuse(conn, "bad request")
                return False
            if len(parsed.ready) > _MAX_PIPELINED:
                await self._refuse(conn, "too many pipelined requests")
                return False
        return True

    async def _refuse(self, conn: _Connection, message: str) -> None:
        """A 400 saying ``message``; the connection closes after it."""
        response = Response.error(400, message)
        await conn.send_all(self._head(response, len(response.body), close=True) + response.body)

    def _head(self, response: Response, length: int | None, *, close: bool) -> bytes:
        """The status line and headers; ``length`` None for a body without Content-Length."""
        lines = [_STATUS_LINES.get(response.status) or b"HTTP/1.1 %d \r\n" % response.status]
        lines += [b"%s: %s\r\n" % header for header in response.headers]
        if length is not None:
            lines.append(b"content-length: %d\r\n" % length)
        if close:
            lines.append(b"connection: close\r\n")
        lines.append(b"date: %s\r\n\r\n" % self._date())
        return b"".join(lines)

    async def _answer(self, conn: _Connection, request: Request) -> bool:
        """Send ``request``'s response; False when the connection must close after it."""
        response = await self._handler(request)
        head_only = request.method == "HEAD"
        body_stream = response.stream
        first = b""
        if body_stream is not None and not head_only:
            # Errors before the first byte still get a status: start the stream first.
            try:
                first = await anext(body_stream, b"")
            except TvixmountError as exc:
                log.error("%s", exc)
                await body_stream.aclose()
                response, body_stream = Response.error(500, str(exc)), None
        length = len(response.body) if body_stream is None else response.length
        http11 = request.http_version == "1.1"
        chunked = length is None and http11 and not head_only
        if chunked:
            response.headers.append((b"transfer-encoding", b"chunked"))
        # A body of unknown length over HTTP/1.0 ends when the connection does.
        keep_alive = (
            request.keep_alive
            and not self._stopping.is_set()
            and (length is not None or chunked or head_only)
        )
        if keep_alive and not http11:
            response.headers.append((b"connection", b"keep-alive"))
        head = self._head(response, length, close=http11 and not keep_alive)
        sent = 0
        try:
            if body_stream is None or head_only:
                body = b"" if head_only else response.body
                await conn.send_all(head + body)
                sent = len(body)
                return keep_alive
            await conn.send_all(head)
            try:
                sent += await _send_chunk(conn, first, chunked)
                async for chunk in body_stream:
                    sent += await _send_chunk(conn, chunk, chunked)
            except TvixmountError as exc:
                # Closing short of the length (or of the last chunk) breaks the transfer.
                log.error("aborted a transfer: %s", exc)
                return False
            if chunked:
                await conn.send_all(b"0\r\n\r\n")
            return keep_alive
        finally:
            if body_stream is not None:
                await body_stream.aclose()
            if self._access_log is not None:
                self._log(request, response.status, sent, conn.peer)

    def _log(self, request: Request, status: int, sent: int, peer: str) -> None:
        assert self._access_log is not None
        target = request.path + (b"?" + request.query if request.query else b"")
        self._access_log.info(
            '%s "%s %s HTTP/%s" %d %d',
            peer,
            request.method,
            target.decode("latin-1"),
            request.http_version,
            status,
            sent,
        )


async def _send_chunk(conn: _Connection, chunk: bytes, chunked: bool) -> int:
    if not chunk:
        return 0
    if chunked:
        await conn.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        return len(chunk)
    view = memoryview(chunk)
    for start in range(0, len(view), _SEND_SLICE):
        await conn.send_all(view[start : start + _SEND_SLICE])
    return len(chunk)

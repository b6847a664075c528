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
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

import httptools
import trio

from ....errors import TvixmountError

log = logging.getLogger(__name__)

GRACEFUL_SECONDS = 5.0
KEEP_ALIVE_SECONDS = 75.0  # nginx's default; Nix reuses a connection across many paths
_RECEIVE_BYTES = 64 << 10
_MAX_PIPELINED = 64  # parsed requests waiting for an answer before the server stops reading
# Out of descriptors or memory: waiting a little may free some (as trio.serve_listeners).
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
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
        listener = trio.SocketListener(self._sock)
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                log.error("accepting a connection: %s", exc)
                await trio.sleep(0.1)
                continue
            connections.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:
            peer = "-"
        parsed = _Parsed()
        try:
            async with stream:
                while not self._stopping.is_set():
                    if not parsed.ready and not await self._receive(stream, parsed):
                        return
                    request = parsed.ready.pop(0)
                    if not await self._answer(stream, request, peer) or not request.keep_alive:
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up

    async def _receive(self, stream: trio.SocketStream, parsed: _Parsed) -> bool:
        """Read until a whole request is parsed; False when the connection should close."""
        while not parsed.ready:
            with trio.CancelScope(deadline=trio.current_time() + KEEP_ALIVE_SECONDS) as idle:
                self._idle.add(idle)
                try:
                    if self._stopping.is_set():
                        return False
                    data = await stream.receive_some(_RECEIVE_BYTES)
                finally:
                    self._idle.discard(idle)
            if idle.cancelled_caught or not data:
                return False
            try:
                parsed.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                await self._send_error(stream, 400, "protocol upgrades are not served")
                return False
            except httptools.HttpParserError:
                await self._send_error(stream, 400, "bad request")
                return False
            if len(parsed.ready) > _MAX_PIPELINED:
                await self._send_error(stream, 400, "too many pipelined requests")
                return False
        return True

    async def _send_error(self, stream: trio.SocketStream, status: int, message: str) -> None:
        response = Response.text(status, message + "\n")
        await stream.send_all(self._head(response, len(response.body), close=True) + response.body)

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

    async def _answer(self, stream: trio.SocketStream, request: Request, peer: str) -> bool:
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
                response, body_stream = Response.text(500, f"{exc}\n"), None
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
                await stream.send_all(head + body)
                sent = len(body)
                return keep_alive
            await stream.send_all(head)
            try:
                sent += await _send_chunk(stream, first, chunked)
                async for chunk in body_stream:
                    sent += await _send_chunk(stream, chunk, chunked)
            except TvixmountError as exc:
                # Closing short of the length (or of the last chunk) breaks the transfer.
                log.error("aborted a transfer: %s", exc)
                return False
            if chunked:
                await stream.send_all(b"0\r\n\r\n")
            return keep_alive
        finally:
            if body_stream is not None:
                await body_stream.aclose()
            if self._access_log is not None:
                self._log(request, response.status, sent, peer)

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


async def _send_chunk(stream: trio.SocketStream, chunk: bytes, chunked: bool) -> int:
    if not chunk:
        return 0
    if chunked:
        await stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    else:
        await stream.send_all(chunk)
    return len(chunk)

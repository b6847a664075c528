"""``tvixmount serve --http``: any store served to Nix as a binary cache.

The HTTP server (:mod:`.http`) runs the cache's routes (:mod:`.app`) on the
caller's trio loop, the loop that owns the store, so requests use the
store's async API directly; blocking reads already go to worker threads
inside the store, and one slow NAR holds up only its own request.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence

from ....errors import TvixmountError
from ....nar.signing import SecretKey
from ... import Store
from .app import CacheApp
from .catalog import Catalog
from .http import Server

DEFAULT_PRIORITY = 30  # what nix-serve and harmonia advertise
# Connections the kernel queues before they are accepted: a burst of clients
# must not overflow it (a dropped SYN is retried a second later).
_BACKLOG = 1024
_BIND = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})")


def check_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) as host and port, or :class:`TvixmountError`."""
    match = _BIND.fullmatch(bind)
    if match is None or int(match[2]) > 65535:
        raise TvixmountError(f"cannot serve HTTP on {bind!r}: expected HOST:PORT")
    return match[1].strip("[]"), int(match[2])


def listen(bind: str) -> socket.socket:
    """A TCP socket bound to ``bind`` and listening, or :class:`TvixmountError`."""
    host, port = check_bind(bind)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise TvixmountError(f"cannot serve HTTP on {bind!r}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


class HttpServer(Server):
    """A binary cache on ``sock``, a listening socket (:func:`listen`).

    Binding up front makes a busy port one clear error before anything runs,
    and lets the caller announce the URL. :meth:`serve` answers requests
    until :meth:`stop`; responses in flight get ``GRACEFUL_SECONDS`` to finish.
    """

    def __init__(
        self,
        store: Store,
        sock: socket.socket,
        *,
        secret_keys: Sequence[SecretKey] = (),
        priority: int = DEFAULT_PRIORITY,
        log_requests: bool = False,
    ) -> None:
        self.url = url_of(sock)
        app = CacheApp(store, Catalog(store, secret_keys), priority)
        super().__init__(sock, app, access_log=log_requests)


__all__ = ["DEFAULT_PRIORITY", "HttpServer", "listen"]

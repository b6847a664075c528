"""``tvixmount serve --http``: any store served to Nix as a binary cache.

hypercorn runs the ASGI app (:mod:`.app`) on the caller's trio loop, the
loop that owns the store, so requests use the store's async API directly;
blocking reads already go to worker threads inside the store, and one slow
NAR holds up only its own request. HTTP/1.1 keep-alive and graceful shutdown
(in-flight responses get ``GRACEFUL_SECONDS`` to finish) are hypercorn's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.utils import repr_socket_addr

from ....errors import TvixmountError
from ....nar.signing import SecretKey
from ... import Store
from .app import CacheApp
from .catalog import Catalog

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

DEFAULT_PRIORITY = 30  # what nix-serve and harmonia advertise
GRACEFUL_SECONDS = 5.0
_BIND = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})")

access_log = logging.getLogger("tvixmount.http.access")


def check_bind(bind: str) -> str:
    """``HOST:PORT`` (IPv6 hosts in brackets), or :class:`TvixmountError`."""
    match = _BIND.fullmatch(bind)
    if match is None or int(match[2]) > 65535:
        raise TvixmountError(f"cannot serve HTTP on {bind!r}: expected HOST:PORT")
    return bind


class HttpServer:
    """A binary cache listening on ``bind``: bound and listening once constructed.

    Binding up front makes a busy port one clear error before anything runs,
    and lets the caller announce the URL; hypercorn takes the socket over by
    its descriptor. :meth:`serve` answers requests until :meth:`stop`.
    """

    def __init__(
        self,
        store: Store,
        bind: str,
        *,
        secret_keys: Sequence[SecretKey] = (),
        priority: int = DEFAULT_PRIORITY,
        log_requests: bool = False,
    ) -> None:
        config = Config()
        config.bind = [check_bind(bind)]
        config.accesslog = access_log if log_requests else None
        config.errorlog = logging.getLogger("tvixmount.http")
        config.graceful_timeout = GRACEFUL_SECONDS
        try:
            [sock] = config.create_sockets().insecure_sockets
            sock.listen(config.backlog)
        except OSError as exc:
            raise TvixmountError(f"cannot serve HTTP on {bind!r}: {exc.strerror or exc}") from None
        self.url = f"http://{repr_socket_addr(sock.family, sock.getsockname())}"
        config.bind = [f"fd://{sock.detach()}"]
        self._config = config
        self._app = CacheApp(store, Catalog(store, secret_keys), priority)
        self._shutdown = trio.Event()

    async def serve(self) -> None:
        # The app takes plain dicts; hypercorn's TypedDict signature is stricter.
        app = cast("ASGIFramework", self._app)
        await serve(app, self._config, shutdown_trigger=self._shutdown.wait)

    def stop(self) -> None:
        """Stop accepting; responses in flight get ``GRACEFUL_SECONDS`` to finish."""
        self._shutdown.set()


__all__ = ["DEFAULT_PRIORITY", "HttpServer", "check_bind"]

"""systemd's readiness protocol: a datagram to ``$NOTIFY_SOCKET`` (``sd_notify(3)``).

Implemented here rather than through libsystemd: it is one datagram on a unix
socket, and the tool must run where systemd is absent.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` (``"READY=1"``, ``"STOPPING=1"``) if systemd asked for it; whether sent.

    A name starting with ``@`` is in the abstract namespace. Failing to tell
    systemd is logged, never fatal: the mount itself is fine.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd (%s) of %s: %s", address.lstrip("\0"), state, exc)
        return False
    return True

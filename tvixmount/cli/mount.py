"""``tvixmount mount``: check the mount point, then serve (in the background by default)."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import MountError
from .common import add_store_argument, open_store_from_args

if TYPE_CHECKING:
    from ..fs.mount import MountOptions
    from ..stores import Store

log = logging.getLogger(__name__)

StoreOpener = Callable[[], "Store"]
SYSLOG_SOCKET = "/dev/log"
_ANSWER_TIMEOUT = 30.0

# fs.operations.DEFAULT_TIMEOUT, repeated: importing the fs layer (pyfuse3, trio)
# only to build the parser would slow down every other command.
DEFAULT_TIMEOUT = 30.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mount = subparsers.add_parser(
        "mount",
        help="mount the store read-only at MOUNTPOINT",
        description="Mount the store read-only over FUSE. Without --foreground, return once "
        "the mount answers and keep serving in the background; its logs go to --log-file FILE, "
        "else to syslog (the journal) when /dev/log exists, never to the terminal. With "
        "--foreground it tells systemd when it is ready ($NOTIFY_SOCKET, Type=notify). Stop it "
        "with `tvixmount umount MOUNTPOINT`, SIGTERM or SIGINT.",
    )
    mount.add_argument(
        "mountpoint",
        metavar="MOUNTPOINT",
        help="an existing directory (its contents stay hidden while mounted)",
    )
    add_store_argument(mount)
    mount.add_argument(
        "--list-root", action="store_true", help="allow listing the mount root (all store paths)"
    )
    mount.add_argument("--no-xattr", action="store_true", help="do not serve extended attributes")
    mount.add_argument(
        "--allow-other", action="store_true", help="let other users access the mount"
    )
    mount.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="answer EIO when the store does not answer a request within SECONDS "
        f"(default {DEFAULT_TIMEOUT:g}; 0: wait forever)",
    )
    mount.add_argument(
        "--foreground", action="store_true", help="serve in this process until unmounted"
    )
    mount.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the parser is built for every command, which must not pay for
    # pyfuse3, trio or a store backend.
    from ..fs.mount import MountOptions
    from ..fs.mountpoint import check_mountpoint
    from ..stores import check_store_url, default_store_url

    check_store_url(args.store or default_store_url())
    mountpoint = check_mountpoint(args.mountpoint)
    options = MountOptions(
        list_root=args.list_root,
        xattr=not args.no_xattr,
        allow_other=args.allow_other,
        timeout=args.timeout or None,
    )
    open_store = functools.partial(open_store_from_args, args)
    if args.foreground:
        _serve_foreground(mountpoint, open_store, options)
    else:
        _mount_background(mountpoint, open_store, options)
    return 0


def _serve_foreground(mountpoint: str, open_store: StoreOpener, options: MountOptions) -> None:
    """Serve in this process; systemd (``Type=notify``) hears when it is ready and stopping."""
    from ..mounting import serve_store
    from ..sdnotify import notify

    def ready() -> None:
        log.info("serving %s", mountpoint)
        notify("READY=1")

    def stopping() -> None:
        notify("STOPPING=1")

    serve_store(open_store, mountpoint, options, ready, stopping)


# -- background mode ----------------------------------------------------------
#
# The serving process (mounting.fork_server) starts a new session, leaves the
# caller's terminal, opens the store, mounts, and tells the parent once the mount
# answers (and its readahead is set); the parent then returns, and the child
# serves until unmounted or signalled.


def _detach_stdio() -> None:
    # Holding the caller's stdout/stderr open would keep a pipe reader (a shell
    # `$(...)`, subprocess.run) waiting for the daemon's exit, and a terminal must
    # not receive lines from a process that already returned to the prompt.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _writes_to_terminal(handler: logging.Handler) -> bool:
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and handler.stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    )


def _log_away_from_the_terminal() -> None:
    """Send what went to stderr to syslog (the journal) when ``/dev/log`` exists, else nowhere.

    A ``--log-file`` handler stays as it is.
    """
    import logging.handlers

    root = logging.getLogger()
    kept = [h for h in root.handlers if not _writes_to_terminal(h)]
    if len(kept) == len(root.handlers):
        return
    handler: logging.Handler = logging.NullHandler()
    if os.path.exists(SYSLOG_SOCKET):
        try:
            handler = logging.handlers.SysLogHandler(
                SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
        except OSError:
            pass
        else:
            handler.setFormatter(
                logging.Formatter(f"tvixmount[{os.getpid()}]: %(levelname)s %(name)s: %(message)s")
            )
    root.handlers[:] = [*kept, handler]


def _mount_background(mountpoint: str, open_store: StoreOpener, options: MountOptions) -> int:
    """Fork a serving process; return its pid once the mount answers."""
    from ..fs.mountpoint import statvfs_with_timeout
    from ..mounting import fork_server, serve_store

    def serve(ready: Callable[[], None]) -> None:
        os.setsid()
        _detach_stdio()
        _log_away_from_the_terminal()

        def serving() -> None:
            log.info("serving %s (pid %d)", mountpoint, os.getpid())
            ready()

        serve_store(open_store, mountpoint, options, serving)

    pid = fork_server(serve, "the serving process")
    # The kernel holds requests until the server's loop runs; one statfs
    # answered proves the mount is live.
    probe = statvfs_with_timeout(mountpoint, _ANSWER_TIMEOUT)
    if probe is None:
        raise MountError(f"{mountpoint} is mounted but does not answer (pid {pid})")
    if isinstance(probe, OSError):
        raise MountError(f"{mountpoint} is mounted but does not answer: {probe.strerror}")
    return pid

"""``tvixmount mount``: check the mount point, then serve (in the background by default)."""

from __future__ import annotations

import argparse
import functools

from .common import add_store_argument, open_store_from_args

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
        "the mount answers and keep serving in the background; its logs go to the terminal "
        "or to `tvixmount --log-file FILE mount ...`. Stop it with `tvixmount umount MOUNTPOINT`, "
        "fusermount3 -u, SIGTERM or SIGINT.",
    )
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
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
    from ..fs.mount import MountOptions, check_mountpoint, mount_background, mount_foreground
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
        mount_foreground(mountpoint, open_store, options)
    else:
        mount_background(mountpoint, open_store, options)
    return 0

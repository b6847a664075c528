"""``tvixmount umount``: unmount a tvixmount mount (also a stale one left by a killed server)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "umount",
        help="unmount a tvixmount mount (also clears a stale one)",
        description="Unmount the tvixmount mount at MOUNTPOINT with fusermount3 -u and wait for "
        "its server to exit. Any other mount there (tmpfs, another FUSE filesystem, a bind "
        "mount) is left alone.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..fs.mountpoint import unmount

    unmount(args.mountpoint)
    return 0

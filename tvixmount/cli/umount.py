"""``tvixmount umount``: unmount (also a stale mount left by a killed server)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "umount",
        help="unmount a tvixmount mount (also clears a stale one)",
        description="Unmount MOUNTPOINT with fusermount3 -u and wait for its server to exit.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..fs.mount import unmount

    unmount(args.mountpoint)
    return 0

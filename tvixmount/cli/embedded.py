"""The ``--store DIR`` of the commands that only work on an embedded store (gc, delete, info)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import StoreURLError


def add_store_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="DIR",
        default=None,
        help="embedded store directory (default: $TVIXMOUNT_STORE or $XDG_DATA_HOME/tvixmount)",
    )


def store_dir(args: argparse.Namespace, command: str) -> Path:
    """The embedded store the command works on; a store URL of another kind is refused."""
    from ..stores import default_store_url, scheme_of

    url: str = args.store or default_store_url()
    if scheme_of(url):
        raise StoreURLError(f"{command} works on an embedded store (a directory), not on {url!r}")
    return Path(url).expanduser()


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")

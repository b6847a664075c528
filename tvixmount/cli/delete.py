"""``tvixmount delete STORE_PATH... [--store DIR]``: remove paths, like ``nix-store --delete``.

Refused while another path that stays refers to one of them; the space
comes back at the next ``tvixmount gc``.
"""

from __future__ import annotations

import argparse

from .common import parse_store_paths
from .embedded import add_store_dir_argument, store_dir


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "delete",
        help="remove store paths from an embedded store (like nix-store --delete)",
        description="Remove store paths; their space comes back at the next gc.",
    )
    parser.add_argument(
        "store_paths", nargs="+", metavar="STORE_PATH", help="basename or /nix/store/..."
    )
    add_store_dir_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import StoreError
    from ..stores.local.store import open_local

    paths = sorted(set(parse_store_paths(args.store_paths)))
    root = store_dir(args, "delete")
    blobs, _, pathinfos, db = open_local(root, create=False)
    try:
        if blobs.read_only:
            raise StoreError(f"{root}: the store is read-only; delete needs write access")
        pathinfos.delete(paths)
    finally:
        blobs.close()
        db.close()
    for path in paths:
        print(f"deleted '{path.absolute}'")
    return 0

"""``tvixmount nar STORE_PATH [--store URL]``: write a path's NAR to stdout.

The output is byte-identical to ``nix-store --dump`` of the same path and is
streamed: memory use does not grow with the size of the path.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .common import add_store_argument, get_path_info, open_store_from_args, parse_store_paths

if TYPE_CHECKING:
    from ..storepath import StorePath


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "nar",
        help="write a store path's NAR to stdout (like nix-store --dump)",
        description="Write the NAR serialisation of STORE_PATH to stdout.",
    )
    parser.add_argument("store_path", metavar="STORE_PATH", help="basename or /nix/store/...")
    add_store_argument(parser)
    parser.set_defaults(func=run)


async def _dump(args: argparse.Namespace, store_path: StorePath) -> int:
    from ..nar.writer import write_nar

    store = open_store_from_args(args)
    try:
        info = await get_path_info(store, store_path)
        out = sys.stdout.buffer
        async for chunk in write_nar(info.node, store.blobs, store.directories):
            out.write(chunk)
        out.flush()
    finally:
        await store.aclose()
    return 0


def run(args: argparse.Namespace) -> int:
    import trio  # here: the parser for every command imports this module

    [store_path] = parse_store_paths([args.store_path])
    return trio.run(_dump, args, store_path)

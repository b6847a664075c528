"""``tvixmount verify [--store URL] [STORE_PATH...] [--json]``, like ``nix store verify``.

Checks every Directory and blob of each path (all paths without arguments)
and the NAR hash; names each damaged path on stderr and exits 1 if any is.
A remote store is only read.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from .common import add_store_argument, get_path_info, open_store_from_args, parse_store_paths

if TYPE_CHECKING:
    from ..storepath import StorePath
    from ..verify import Verdict


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check store paths for damage (like nix store verify --check-contents)",
        description="Check each path's Directories, blobs and NAR hash; exit 1 if any is damaged.",
    )
    parser.add_argument(
        "store_paths",
        nargs="*",
        metavar="STORE_PATH",
        help="basename or /nix/store/... (default: all)",
    )
    parser.add_argument("--json", action="store_true", help="print one result per path as JSON")
    add_store_argument(parser)
    parser.set_defaults(func=run)


async def _verify(args: argparse.Namespace, paths: list[StorePath]) -> list[Verdict]:
    from ..verify import verify_all

    store = open_store_from_args(args)
    try:
        infos = [await get_path_info(store, path) for path in paths] if paths else None
        return await verify_all(store, infos)
    finally:
        await store.aclose()


def run(args: argparse.Namespace) -> int:
    import trio  # here: the parser for every command imports this module

    paths = sorted(set(parse_store_paths(args.store_paths)))
    verdicts = trio.run(_verify, args, paths)
    for verdict in verdicts:
        if verdict.damage is not None:
            print(
                f"path '{verdict.info.store_path.absolute}' is damaged: {verdict.damage}",
                file=sys.stderr,
            )
    damaged = sum(1 for verdict in verdicts if not verdict.ok)
    if args.json:
        results = [
            {"path": v.info.store_path.absolute, "ok": v.ok, "error": v.damage} for v in verdicts
        ]
        print(json.dumps(results))
    elif damaged:
        print(f"{damaged} of {len(verdicts)} paths are damaged", file=sys.stderr)
    return 1 if damaged else 0

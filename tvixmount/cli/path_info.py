"""``tvixmount path-info STORE_PATH... [--store URL] [--json]``.

Plain output is one absolute path per line; ``--json`` prints what Nix 2.8's
``nix path-info --json`` prints for the same paths (one line, a list of
objects with ``path``, ``narHash`` in SRI form, ``narSize``, ``references``,
``ca``, and ``deriver`` / ``signatures`` when present). Like Nix, paths are
printed once each, sorted, and nothing is printed if any path is unknown.
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import TYPE_CHECKING

from .common import add_store_argument, get_path_info, open_store_from_args, parse_store_paths

if TYPE_CHECKING:
    from ..pathinfo.model import PathInfo
    from ..storepath import StorePath

JsonValue = str | int | list[str]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "path-info",
        help="show store path metadata (like nix path-info)",
        description="Print the given store paths, or their metadata with --json.",
    )
    parser.add_argument(
        "store_paths", nargs="+", metavar="STORE_PATH", help="basename or /nix/store/..."
    )
    parser.add_argument("--json", action="store_true", help="JSON like nix path-info --json")
    add_store_argument(parser)
    parser.set_defaults(func=run)


def to_json(info: PathInfo) -> dict[str, JsonValue]:
    """One path's object, keys in Nix 2.8's order."""
    narinfo = info.narinfo
    obj: dict[str, JsonValue] = {
        "path": info.store_path.absolute,
        "narHash": "sha256-" + base64.b64encode(narinfo.nar_sha256).decode(),
        "narSize": narinfo.nar_size,
        "references": sorted(p.absolute for p in info.reference_paths),
    }
    if narinfo.ca is not None:
        obj["ca"] = str(narinfo.ca)
    if narinfo.deriver is not None:
        obj["deriver"] = narinfo.deriver.absolute + ".drv"
    if narinfo.signatures:
        obj["signatures"] = [str(s) for s in narinfo.signatures]
    return obj


async def _query(args: argparse.Namespace, paths: list[StorePath]) -> list[PathInfo]:
    store = open_store_from_args(args)
    try:
        return [await get_path_info(store, path) for path in paths]
    finally:
        await store.aclose()


def run(args: argparse.Namespace) -> int:
    import trio  # here: the parser for every command imports this module

    paths = sorted(set(parse_store_paths(args.store_paths)))
    infos = trio.run(_query, args, paths)
    if args.json:
        print(json.dumps([to_json(info) for info in infos], separators=(",", ":")))
    else:
        for info in infos:
            print(info.store_path.absolute)
    return 0

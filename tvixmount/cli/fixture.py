"""``tvixmount fixture build SPEC.toml [--store URL] [--nix-cache DIR]``.

Builds a declarative fixture spec (see ``tvixmount.testing.spec``) into a
store and prints one absolute store path per spec path, dependencies first.
The whole spec is validated before anything is written; a bad spec is one
``FILE:LINE: reason`` line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_store_argument, store_options

# testing.build.COMPRESSIONS, repeated: building the parser (for every command)
# must not import the fixture builder. A test keeps the two equal.
COMPRESSIONS = ("none", "xz")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fixture",
        help="build declarative fixture stores (TOML specs)",
        description="Work with declarative fixture stores.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="build a spec into a store and print its store paths",
        description="Build SPEC into the store (created if needed) and print the absolute "
        "store path of every path in it, dependencies first.",
    )
    build.add_argument("spec", metavar="SPEC.toml", type=Path, help="the fixture spec")
    add_store_argument(build)
    build.add_argument(
        "--nix-cache",
        metavar="DIR",
        type=Path,
        default=None,
        help="also write a Nix binary cache of the paths to DIR (for nix copy --from file://DIR)",
    )
    build.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="xz",
        help="NAR compression in the binary cache (default: xz)",
    )
    build.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import trio

    from ..testing.build import build_into
    from ..testing.spec import load_spec

    spec = load_spec(args.spec)
    options = store_options(args, create=True)
    fixture = trio.run(build_into, spec, args.store, options, args.nix_cache, args.compression)
    for built in fixture.paths:
        print(built.store_path.absolute, flush=True)
    return 0

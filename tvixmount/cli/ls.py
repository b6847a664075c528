"""``tvixmount ls``: list a store, or a store path's contents, without mounting.

Three renderings of one listing (:mod:`tvixmount.listing`):

- on a terminal, a tree (or an aligned table of store paths) coloured by
  type with rich styles, human sizes and a summary line;
- plain text when stdout is not a terminal: one line per entry, fixed
  columns, exact byte sizes, no summary, so it pipes into ``grep``/``cut``;
- ``--json``: the shape of Nix's ``nix store ls --json`` (with a path) or a
  ``nix path-info --json``-like list (without one).

Plain text columns: ``TYPE SIZE [DIGEST] PATH[ -> TARGET]`` where TYPE is
``directory``, ``regular``, ``executable`` or ``symlink``; SIZE is the file
size for files (the NAR size in the store-wide listing) and ``-`` otherwise;
DIGEST (``--digests``) is the castore digest (``-`` for symlinks).

``-l`` prints what ``nix store ls -l`` prints, byte for byte: ``MODE SIZE
PATH[ -> TARGET]`` with Nix's mode strings (``-r--r--r--``, ``-r-xr-xr-x``,
``dr-xr-xr-x``, ``lrwxrwxrwx``), the size right-aligned in 20 columns (0 for
directories and symlinks) and paths below a listed directory as ``./NAME``;
in the store-wide listing SIZE is the NAR size and PATH the basename.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from .common import add_store_argument, at_least, open_store_from_args

if TYPE_CHECKING:
    from rich.console import Console

    from ..listing import Listing, StoreEntry

EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ls",
        help="list the store, or a store path's contents",
        description="List the store paths in a store, or the entries of "
        "STORE_PATH[/SUBPATH], without mounting.",
    )
    parser.add_argument(
        "path",
        nargs="?",
        metavar="STORE_PATH[/SUBPATH]",
        help="what to list (a basename or /nix/store/...); omitted: the store paths",
    )
    add_store_argument(parser)
    parser.add_argument("-R", "--recursive", action="store_true", help="list recursively")
    parser.add_argument(
        "-l",
        "--long",
        action="store_true",
        help="mode bits and sizes, as `nix store ls -l` prints them",
    )
    parser.add_argument("--digests", action="store_true", help="also show castore (BLAKE3) digests")
    parser.add_argument(
        "--json", action="store_true", help="JSON output, shaped like `nix store ls --json`"
    )
    parser.add_argument(
        "--depth",
        type=at_least(1),
        metavar="N",
        help="descend at most N levels (implies -R; 1 lists the entries only)",
    )
    parser.set_defaults(func=run)


def listing_depth(args: argparse.Namespace) -> int | None:
    if args.depth is not None:
        return int(args.depth)
    return None if args.recursive else 1


def _terminal_console() -> Console | None:
    """The rich console for stdout if rich treats it as a terminal, else None.

    Rich consults ``TTY_COMPATIBLE`` and ``FORCE_COLOR`` before ``isatty()``;
    without either, a stdout that is no tty is no terminal to rich either,
    and the piped listing skips importing rich.
    """
    overridden = "FORCE_COLOR" in os.environ or os.environ.get("TTY_COMPATIBLE") in ("0", "1")
    if not overridden and not sys.stdout.isatty():
        return None
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else None


def run(args: argparse.Namespace) -> int:
    if args.path is None and (args.recursive or args.depth is not None):
        print("tvixmount ls: error: -R and --depth need a STORE_PATH", file=sys.stderr)
        return EXIT_USAGE
    # Imported here, not at the top: building the parser for any command imports
    # this module, and trio, the listing layer and rich take most of a second.
    import trio

    from .ls_render import plain_lines, plain_store_lines, print_json, write_lines

    if args.path is None:
        entries = trio.run(_store_entries, args)
        if args.json:
            from ..listing import store_to_json

            print_json(store_to_json(entries))
        elif (console := _terminal_console()) is not None:
            from .ls_terminal import print_store_table

            print_store_table(console, entries, args.long, args.digests)
        else:
            write_lines(plain_store_lines(entries, args.long, args.digests))
        return 0
    listing = trio.run(_listing, args)
    if args.json:
        from ..listing import to_nix_json

        print_json(to_nix_json(listing))
    elif (console := _terminal_console()) is not None:
        from .ls_terminal import print_tree

        print_tree(console, listing, args.long, args.digests)
    else:
        write_lines(plain_lines(listing, args.long, args.digests))
    return 0


async def _store_entries(args: argparse.Namespace) -> list[StoreEntry]:
    from ..listing import list_store

    store = open_store_from_args(args)
    try:
        return await list_store(store)
    finally:
        await store.aclose()


async def _listing(args: argparse.Namespace) -> Listing:
    from ..listing import list_path

    store = open_store_from_args(args)
    try:
        return await list_path(
            store, args.path, depth=listing_depth(args), nar_offsets=bool(args.json)
        )
    finally:
        await store.aclose()

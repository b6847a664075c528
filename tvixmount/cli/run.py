"""``tvixmount run``: run a command over a lazily mounted /nix/store."""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

from .common import add_store_argument, at_least, open_store_from_args

# pathinfo.prefetch.DEFAULT_PARALLEL, repeated: the parser must not import trio.
DEFAULT_PREFETCH = 8


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a command over a lazily mounted /nix/store",
        description="Run COMMAND in a private mount namespace where /nix/store is the store "
        "(mounted over FUSE, store paths fetched on first access) with an overlay on top: "
        "what COMMAND writes under /nix/store lands in a temporary upper directory, or in "
        "--upper DIR, which keeps it. The host's mounts and /nix/store are not touched. "
        "Needs root. Exits with COMMAND's status (128+N if signal N ended it).",
    )
    add_store_argument(parser)
    parser.add_argument(
        "--upper",
        metavar="DIR",
        type=Path,
        default=None,
        help="keep what COMMAND writes under /nix/store in DIR (created if missing)",
    )
    parser.add_argument(
        "--prefetch",
        metavar="N",
        type=at_least(0),
        default=DEFAULT_PREFETCH,
        help="on a remote store, fetch the references of each path looked up in the "
        f"background, N at a time (default {DEFAULT_PREFETCH}; 0: off)",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import TvixmountError
    from ..run import RunOptions
    from ..run import run as run_command
    from ..stores import check_store_url, default_store_url

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise TvixmountError("run: no COMMAND given")
    check_store_url(args.store or default_store_url())
    if not args.verbose:
        # The command's stderr is the user's: only problems from tvixmount go there.
        logging.getLogger().setLevel(logging.WARNING)
    options = RunOptions(upper=args.upper, prefetch=args.prefetch)
    return run_command(argv, functools.partial(open_store_from_args, args), options)

"""``tvixmount run``: run a command over a lazily mounted /nix/store."""

from __future__ import annotations

import argparse

from ..errors import TvixmountError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run a command over a lazily mounted /nix/store")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise TvixmountError("run: not built yet")

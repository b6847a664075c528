"""``tvixmount gc``: collect garbage in an embedded store."""

from __future__ import annotations

import argparse

from ..errors import TvixmountError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("gc", help="collect garbage in an embedded store")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise TvixmountError("gc: not built yet")

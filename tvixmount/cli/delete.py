"""``tvixmount delete``: delete store paths from an embedded store."""

from __future__ import annotations

import argparse

from ..errors import TvixmountError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("delete", help="delete store paths from an embedded store")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise TvixmountError("delete: not built yet")

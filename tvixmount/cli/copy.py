"""``tvixmount copy``: copy store paths between stores."""

from __future__ import annotations

import argparse

from ..errors import TvixmountError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("copy", help="copy store paths between stores")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise TvixmountError("copy: not built yet")

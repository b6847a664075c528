"""``tvixmount info``: what an embedded store holds."""

from __future__ import annotations

import argparse

from ..errors import TvixmountError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("info", help="what an embedded store holds")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise TvixmountError("info: not built yet")

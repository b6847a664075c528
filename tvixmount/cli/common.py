"""Argument helpers shared by the command modules.

Every command module is imported to build the parser, so nothing here (or
at the top of a command module) may import a store backend, trio, rich or
the FUSE layer: ``tvixmount --help`` would pay for all of them. Commands
import what they use inside ``run()``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NotFoundError

if TYPE_CHECKING:
    from ..pathinfo.model import PathInfo
    from ..storepath import StorePath
    from ..stores import Store, StoreOptions


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def add_secret_key_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--secret-key FILE`` (repeatable): a Nix secret key file that signs ``what``."""
    parser.add_argument(
        "--secret-key",
        metavar="FILE",
        action="append",
        default=[],
        type=Path,
        help=f"sign {what} with this Nix secret key file (NAME:BASE64; repeatable)",
    )


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="store URL (default: the embedded store in $TVIXMOUNT_STORE or "
        "$XDG_DATA_HOME/tvixmount)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="local castore cache for remote stores (binary caches, gRPC)",
    )
    parser.add_argument(
        "--trusted-public-key",
        metavar="KEY",
        action="append",
        default=[],
        help="NAME:BASE64 ed25519 key a binary cache's narinfos must be signed with (repeatable)",
    )
    parser.add_argument(
        "--no-require-sigs",
        dest="require_sigs",
        action="store_false",
        help="serve a binary cache's paths that no trusted key signed (Nix's require-sigs = false)",
    )


def store_options(args: argparse.Namespace, create: bool = False) -> StoreOptions:
    from ..stores import StoreOptions

    return StoreOptions(
        create=create,
        cache_dir=args.cache_dir,
        trusted_public_keys=tuple(args.trusted_public_key),
        require_sigs=args.require_sigs,
    )


def open_store_from_args(args: argparse.Namespace, create: bool = False) -> Store:
    from ..stores import open_store

    return open_store(args.store, store_options(args, create))


def parse_store_paths(texts: list[str]) -> list[StorePath]:
    """Parse every argument first, so one bad path fails before any work is done.

    A trailing slash (a shell completes a directory with one) is dropped, as Nix does.
    """
    from ..storepath import StorePath

    return [StorePath.parse(text.rstrip("/") or text) for text in texts]


async def get_path_info(store: Store, store_path: StorePath) -> PathInfo:
    """The PathInfo of ``store_path``; :class:`NotFoundError` when the store lacks it."""
    from ..pathinfo.lookup import find_path_info

    info = await find_path_info(store.pathinfos, store_path)
    if info is None:
        raise NotFoundError(f"path '{store_path.absolute}' is not in the store")
    return info

"""``tvixmount copy --to URL [--from URL] STORE_PATH...``: copy closures, like ``nix copy``.

Into a binary cache (``file://``, ``s3://``) it writes what Nix writes,
compressed as the URL's ``compression=`` says (xz by default) and signed by
each ``--secret-key`` and the URL's ``secret-key=``; into a castore store
(a directory, ``memory://``, gRPC) it copies blobs, Directories, then the
PathInfo. ``--json`` prints every path of the closure and whether it was
copied; a terminal gets a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import add_secret_key_argument, parse_store_paths, store_options

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..copy import Copied, Destination
    from ..nar.signing import SecretKey
    from ..pathinfo.model import PathInfo
    from ..stores import Store
    from ..stores.binarycache.compress import Progress


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "copy",
        help="copy store paths and their closures between stores (like nix copy)",
        description="Copy STORE_PATHs (and, unless --no-recursive, everything they refer to) "
        "from one store to another. Paths the destination has are skipped.",
    )
    parser.add_argument("store_paths", nargs="+", metavar="STORE_PATH")
    parser.add_argument("--to", required=True, metavar="URL", help="destination store URL")
    parser.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        default=None,
        help="source store URL (default: the embedded store)",
    )
    add_secret_key_argument(parser, "what is copied")
    parser.add_argument(
        "--trusted-public-key",
        metavar="KEY",
        action="append",
        default=[],
        help="NAME:BASE64 ed25519 key a source binary cache's narinfos must be signed with",
    )
    parser.add_argument(
        "--no-require-sigs",
        dest="require_sigs",
        action="store_false",
        help="accept a source binary cache's paths without a trusted signature",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="local castore cache for a source binary cache",
    )
    parser.add_argument(
        "--no-recursive", action="store_true", help="copy only the paths named, not their closure"
    )
    parser.add_argument("--json", action="store_true", help="print what was copied as JSON")
    parser.set_defaults(func=run)


def _open_source(args: argparse.Namespace) -> Store:
    from ..stores import open_store

    return open_store(args.source, store_options(args))


def _open_destination(url: str, keys: Sequence[SecretKey]) -> Destination:
    from ..copy import CacheDestination, StoreDestination
    from ..errors import StoreURLError
    from ..stores import StoreOptions, open_store, scheme_of
    from ..stores.binarycache.writer import open_writer

    scheme = scheme_of(url)
    if scheme in ("file", "s3"):
        return CacheDestination(open_writer(url, keys))
    if scheme in ("http", "https"):
        raise StoreURLError(f"{url}: cannot copy to an http(s) binary cache; use file:// or s3://")
    return StoreDestination(open_store(url, StoreOptions(create=True)), keys)


class _Bar:
    """A rich progress bar on stderr over the NAR bytes of the paths to copy."""

    def __init__(self) -> None:
        from .progress import transfer_bar

        self._progress = transfer_bar()
        self._task = self._progress.add_task("copying", total=None)

    def start(self, missing: Sequence[PathInfo]) -> Callable[[PathInfo], Progress]:
        total = sum(info.narinfo.nar_size for info in missing)
        self._progress.update(self._task, total=total)
        self._progress.start()
        return self._path

    def _path(self, info: PathInfo) -> Progress:
        self._progress.update(self._task, description=info.store_path.name)
        return self._advance

    def _advance(self, size: int) -> None:
        self._progress.advance(self._task, size)

    def stop(self) -> None:
        self._progress.stop()


async def _copy(args: argparse.Namespace) -> list[Copied]:
    from ..copy import copy_paths

    paths = parse_store_paths(args.store_paths)
    keys: list[SecretKey] = []
    if args.secret_key:  # cryptography costs 30 ms to import; only signing needs it
        from ..nar.signing import read_secret_key

        keys = [read_secret_key(path) for path in args.secret_key]
    destination = _open_destination(args.to, keys)
    try:
        source = _open_source(args)
        try:
            bar = _Bar() if sys.stderr.isatty() else None
            # What is loaded by now (modules, stores) lives until exit: frozen, the
            # collections during the copy and the one at exit (20 ms) skip it.
            gc.freeze()
            try:
                return await copy_paths(
                    source,
                    destination,
                    paths,
                    recursive=not args.no_recursive,
                    progress=bar.start if bar is not None else None,
                )
            finally:
                if bar is not None:
                    bar.stop()
        finally:
            await source.aclose()
    finally:
        await destination.aclose()


def _inline(args: argparse.Namespace) -> bool:
    """Whether every await of this copy completes inline: the embedded store into a
    ``file://`` cache (:mod:`tvixmount.loopless`: no trio to import)."""
    from ..stores import scheme_of

    return scheme_of(args.source or "") == "" and scheme_of(args.to) == "file"


def run(args: argparse.Namespace) -> int:
    if _inline(args):
        from .. import loopless

        copied = loopless.run(_copy, args)
    else:
        import trio

        copied = trio.run(_copy, args)
    if args.json:
        json.dump([entry.to_json() for entry in copied], sys.stdout, indent=None)
        sys.stdout.write("\n")
    else:
        new = [entry for entry in copied if entry.copied]
        size = sum(entry.info.narinfo.nar_size for entry in new)
        print(
            f"copied {len(new)} of {len(copied)} paths ({size / (1 << 20):.1f} MiB of NAR) "
            f"to {args.to}",
            file=sys.stderr,
        )
    return 0

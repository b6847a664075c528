"""``tvixmount import PATH... [--store URL]``: add local paths, like ``nix-store --add``.

Prints one absolute store path per PATH, in order. The embedded store is
created when it does not exist yet.
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import IngestError
from .common import add_store_argument, open_store_from_args

if TYPE_CHECKING:
    import trio

    from ..castore.ingest import Progress as ProgressCallback

# Below this much file data an import is over before a bar would be worth drawing.
PROGRESS_MIN_BYTES = 8 << 20


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "import",
        help="add local paths to the store (like nix-store --add)",
        description="Add each PATH to the store and print its store path, like nix-store --add.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="file, directory or symlink")
    add_store_argument(parser)
    parser.set_defaults(func=run)


def _check_exists(paths: list[str]) -> None:
    """Fail on a missing argument before importing any of them."""
    for path in paths:
        try:
            os.lstat(path)
        except FileNotFoundError:
            raise IngestError(f"{path}: no such file or directory") from None
        except OSError as exc:
            raise IngestError(f"{path}: cannot stat: {exc.strerror}") from None


def _file_bytes(path: str) -> int:
    """Total size of the regular files under ``path`` (for the progress bar only)."""
    from ..castore.ingest import regular_files

    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    try:
        return sum(size for _path, size in regular_files(os.fsencode(path)))
    except OSError:
        return 0  # no bar: the import itself fails on this tree, naming the entry


@contextmanager
def _progress_bar(path: str) -> Iterator[ProgressCallback | None]:
    """A rich bar on stderr for big imports, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    total = _file_bytes(path)
    if total < PROGRESS_MIN_BYTES:
        yield None
        return
    from .progress import transfer_bar

    with transfer_bar() as progress:
        task = progress.add_task(os.path.basename(os.path.abspath(path)), total=total)
        yield lambda count: progress.advance(task, count)


async def _import_all(args: argparse.Namespace) -> int | None:
    """Import every path; returns the number of a signal (SIGINT, SIGTERM) that stopped it."""
    import trio

    from ..castore.ingest import sole_error
    from ..importer import import_path

    stopped_by: list[int] = []

    async def stop_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
        async for signum in signals:
            stopped_by.append(signum)
            scope.cancel()
            return

    store = open_store_from_args(args, create=True)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop_on_signal, signals, nursery.cancel_scope)
                for path in args.paths:
                    with _progress_bar(path) as progress:
                        info = await import_path(store, path, progress=progress)
                    print(info.store_path.absolute, flush=True)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The one error that stopped the import, not trio's wrapping (it names the cause).
        raise sole_error(group) from None
    finally:
        await store.aclose()
    return stopped_by[0] if stopped_by else None


def run(args: argparse.Namespace) -> int:
    import trio  # here: the parser for every command imports this module

    _check_exists(args.paths)
    # A signal cancels the import: the walk stops at its next entry or chunk,
    # unfinished blobs are dropped, and no PathInfo is written (what was
    # stored is unreferenced; the next gc removes it).
    signum = trio.run(_import_all, args)
    if signum == signal.SIGTERM:
        # Die of the signal, as the sender expects (the store is closed by now).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    if signum is not None:
        raise KeyboardInterrupt
    return 0

"""Plain-text and JSON renderings of ``tvixmount ls`` (see :mod:`tvixmount.cli.ls`).

Kept out of the command module: every command module is imported to build
the parser, and this one needs the listing layer (protobuf, the castore).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ..errors import TvixmountError
from ..listing import Entry, EntryType, Listing, StoreEntry, display_name, json_chunks

_DIGEST_WIDTH = len("b3:") + 44  # base64 of 32 bytes, padded


def print_json(value: object) -> None:
    with _writing():
        sys.stdout.writelines(_batched(json_chunks(value)))
        sys.stdout.write("\n")
        sys.stdout.flush()


@contextmanager
def _writing() -> Iterator[None]:
    """Writes to stdout; a failed one (disk full, closed pipe) is one error line, not two."""
    try:
        yield
    except OSError as exc:
        # What is still buffered would fail again, with a traceback, when the
        # interpreter flushes stdout on its way out: send it nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(exc, BrokenPipeError):
            raise  # the reader went away: exit 1 quietly, as cli.main does for it
        raise TvixmountError(f"cannot write the listing: {exc.strerror}") from None


def _batched(chunks: Iterable[str], size: int = 1 << 16) -> Iterator[str]:
    """Join small pieces into writes of about ``size`` characters."""
    batch: list[str] = []
    length = 0
    for chunk in chunks:
        batch.append(chunk)
        length += len(chunk)
        if length >= size:
            yield "".join(batch)
            batch, length = [], 0
    yield "".join(batch)


def write_lines(lines: Iterable[str]) -> None:
    with _writing():
        sys.stdout.writelines(line + "\n" for line in lines)
        sys.stdout.flush()


def kind_of(entry: Entry | StoreEntry) -> str:
    """The type column: Nix's type names, with executables told apart from other files."""
    if entry.type is EntryType.REGULAR and entry.executable:
        return "executable"
    return entry.type.value


_MODES = {
    "directory": "dr-xr-xr-x",
    "regular": "-r--r--r--",
    "executable": "-r-xr-xr-x",
    "symlink": "lrwxrwxrwx",
}


def mode_of(entry: Entry | StoreEntry) -> str:
    """The mode string ``nix store ls -l`` shows (what a store path's files have)."""
    return _MODES[kind_of(entry)]


def _digest_column(entry: Entry | StoreEntry) -> str:
    return f"{entry.digest or '-'!s:<{_DIGEST_WIDTH}} "


def _target(entry: Entry | StoreEntry) -> str:
    return "" if entry.target is None else f" -> {display_name(entry.target)}"


def _line(entry: Entry | StoreEntry, size: int | None, path: str, long: bool, digests: bool) -> str:
    digest = _digest_column(entry) if digests else ""
    if long:
        return f"{mode_of(entry)} {size or 0:20d} {digest}{path}{_target(entry)}"
    return (
        f"{kind_of(entry):<10} {'-' if size is None else size:>12} {digest}{path}{_target(entry)}"
    )


def _file_size(entry: Entry) -> int | None:
    return entry.size if entry.type is EntryType.REGULAR else None


def plain_lines(listing: Listing, long: bool, digests: bool) -> Iterator[str]:
    """A directory's entries by relative path, or the one line of a listed file/symlink.

    ``long``: Nix's ``./``-prefixed paths, as ``nix store ls -l`` prints them.
    """
    root = listing.root
    if root.type is not EntryType.DIRECTORY:
        yield _line(root, _file_size(root), display_name(root.name), long, digests)
        return
    # One name per level, cut back to the entry's level: the path is never rebuilt from scratch.
    names = ["."] if long else []
    base = len(names)
    for level, _, entry in root.walk_levels():
        del names[base + level - 1 :]
        names.append(display_name(entry.name))
        yield _line(entry, _file_size(entry), "/".join(names), long, digests)


def plain_store_lines(entries: list[StoreEntry], long: bool, digests: bool) -> Iterator[str]:
    for entry in entries:
        yield _line(entry, entry.nar_size, entry.name, long, digests)

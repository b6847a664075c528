"""Plain-text and JSON renderings of ``tvixmount ls`` (see :mod:`tvixmount.cli.ls`).

Kept out of the command module: every command module is imported to build
the parser, and this one needs the listing layer (protobuf, the castore).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator

from ..listing import Entry, EntryType, Listing, StoreEntry, display_name

_DIGEST_WIDTH = len("b3:") + 44  # base64 of 32 bytes, padded


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n")


def write_lines(lines: Iterable[str]) -> None:
    sys.stdout.writelines(line + "\n" for line in lines)
    sys.stdout.flush()


def kind_of(entry: Entry | StoreEntry) -> str:
    """The type column: Nix's type names, with executables told apart from other files."""
    if entry.type is EntryType.REGULAR and entry.executable:
        return "executable"
    return entry.type.value


def _plain_line(
    kind: str, size: int | None, digest: str | None, long: bool, path: str, target: str | None
) -> str:
    columns = [f"{kind:<10}", f"{'-' if size is None else size:>12}"]
    if long:
        columns.append(f"{digest or '-':<{_DIGEST_WIDTH}}")
    columns.append(path if target is None else f"{path} -> {target}")
    return " ".join(columns)


def _entry_line(entry: Entry, path: str, long: bool) -> str:
    return _plain_line(
        kind_of(entry),
        entry.size if entry.type is EntryType.REGULAR else None,
        None if entry.digest is None else str(entry.digest),
        long,
        path,
        None if entry.target is None else display_name(entry.target),
    )


def plain_lines(listing: Listing, long: bool) -> Iterator[str]:
    """A directory's entries by relative path, or the one line of a listed file/symlink."""
    root = listing.root
    if root.type is not EntryType.DIRECTORY:
        yield _entry_line(root, display_name(root.name), long)
        return
    for path, entry in root.walk():
        yield _entry_line(entry, "/".join(display_name(p) for p in path), long)


def plain_store_lines(entries: list[StoreEntry], long: bool) -> Iterator[str]:
    for entry in entries:
        yield _plain_line(
            kind_of(entry),
            entry.nar_size,
            None if entry.digest is None else str(entry.digest),
            long,
            entry.name,
            None if entry.target is None else display_name(entry.target),
        )

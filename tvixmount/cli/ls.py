"""``tvixmount ls``: list a store, or a store path's contents, without mounting.

Three renderings of one listing (:mod:`tvixmount.listing`):

- a rich tree (or table) with colours and human sizes, on a terminal;
- plain text when stdout is not a terminal: one line per entry, fixed
  columns, exact byte sizes, no summary, so it pipes into ``grep``/``cut``;
- ``--json``: the shape of Nix's ``nix store ls --json`` (with a path) or a
  ``nix path-info --json``-like list (without one).

Plain text columns: ``TYPE SIZE [DIGEST] PATH[ -> TARGET]`` where TYPE is
``directory``, ``regular``, ``executable`` or ``symlink``; SIZE is the file
size for files (the NAR size in the store-wide listing) and ``-`` otherwise;
DIGEST (``-l``) is the castore digest (``-`` for symlinks).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import trio
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..listing import (
    Entry,
    EntryType,
    Listing,
    StoreEntry,
    Summary,
    display_name,
    list_path,
    list_store,
    store_to_json,
    summarize_store,
    to_nix_json,
)
from .common import add_store_argument, open_store_from_args

EXIT_USAGE = 2
_DIGEST_WIDTH = len("b3:") + 44  # base64 of 32 bytes, padded

_STYLES = {
    "directory": "bold blue",
    "regular": "",
    "executable": "bold green",
    "symlink": "cyan",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ls",
        help="list the store, or a store path's contents",
        description="List the store paths in a store, or the entries of "
        "STORE_PATH[/SUBPATH], without mounting.",
    )
    parser.add_argument(
        "path",
        nargs="?",
        metavar="STORE_PATH[/SUBPATH]",
        help="what to list (a basename or /nix/store/...); omitted: the store paths",
    )
    add_store_argument(parser)
    parser.add_argument("-R", "--recursive", action="store_true", help="list recursively")
    parser.add_argument(
        "-l", "--long", action="store_true", help="also show castore (BLAKE3) digests"
    )
    parser.add_argument(
        "--json", action="store_true", help="JSON output, shaped like `nix store ls --json`"
    )
    parser.add_argument(
        "--depth",
        type=_depth,
        metavar="N",
        help="descend at most N levels (implies -R; 1 lists the entries only)",
    )
    parser.set_defaults(func=run)


def _depth(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def listing_depth(args: argparse.Namespace) -> int | None:
    if args.depth is not None:
        return int(args.depth)
    return None if args.recursive else 1


def run(args: argparse.Namespace) -> int:
    if args.path is None and (args.recursive or args.depth is not None):
        print("tvixmount ls: error: -R and --depth need a STORE_PATH", file=sys.stderr)
        return EXIT_USAGE
    console = Console(highlight=False)
    if args.path is None:
        entries = trio.run(_store_entries, args)
        if args.json:
            _print_json(store_to_json(entries))
        elif console.is_terminal:
            console.print(store_table(entries, args.long))
            console.print(store_summary_line(summarize_store(entries)), soft_wrap=True)
        else:
            _write_lines(plain_store_lines(entries, args.long))
        return 0
    listing = trio.run(_listing, args)
    if args.json:
        _print_json(to_nix_json(listing))
    elif console.is_terminal:
        console.print(listing_tree(listing, args.long))
        console.print(summary_line(listing.summary()), soft_wrap=True)
    else:
        _write_lines(plain_lines(listing, args.long))
    return 0


async def _store_entries(args: argparse.Namespace) -> list[StoreEntry]:
    store = open_store_from_args(args)
    try:
        return await list_store(store)
    finally:
        await store.aclose()


async def _listing(args: argparse.Namespace) -> Listing:
    store = open_store_from_args(args)
    try:
        return await list_path(
            store, args.path, depth=listing_depth(args), nar_offsets=bool(args.json)
        )
    finally:
        await store.aclose()


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n")


def _write_lines(lines: Iterator[str]) -> None:
    sys.stdout.writelines(line + "\n" for line in lines)
    sys.stdout.flush()


# --- plain text -------------------------------------------------------------------------


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


# --- rich -------------------------------------------------------------------------------


def _label(entry: Entry, name: str, long: bool) -> Text:
    text = Text()
    text.append(name, style=_STYLES[kind_of(entry)])
    if entry.type is EntryType.REGULAR:
        text.append(f"  {decimal(entry.size)}", style="dim")
    elif entry.type is EntryType.SYMLINK:
        text.append(" -> ")
        text.append(display_name(entry.target or b""), style="magenta")
    if long and entry.digest is not None:
        text.append(f"  {entry.digest}", style="dim")
    return text


def listing_tree(listing: Listing, long: bool) -> Tree:
    root = listing.root
    tree = Tree(_label(root, listing.path, long))
    stack = [(root, tree)]
    while stack:
        entry, branch = stack.pop()
        for child in entry.children or ():
            sub = branch.add(_label(child, display_name(child.name), long))
            stack.append((child, sub))
    return tree


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _counts(summary: Summary) -> str:
    return (
        f"{_plural(summary.directories, 'directory', 'directories')}, "
        f"{_plural(summary.files, 'file')}, {_plural(summary.symlinks, 'symlink')}"
    )


def summary_line(summary: Summary) -> Text:
    return Text(
        f"{_counts(summary)}, {summary.total_bytes:,} bytes ({decimal(summary.total_bytes)})",
        style="bold",
    )


def store_table(entries: list[StoreEntry], long: bool) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("store path", no_wrap=True)
    table.add_column("type")
    table.add_column("NAR size", justify="right")
    if long:
        table.add_column("castore digest", no_wrap=True, style="dim")
    for entry in entries:
        kind = kind_of(entry)
        name = Text()
        name.append(entry.name, style=_STYLES[kind])
        if entry.target is not None:
            name.append(" -> ")
            name.append(display_name(entry.target), style="magenta")
        row: list[Text | str] = [name, kind, decimal(entry.nar_size)]
        if long:
            row.append("" if entry.digest is None else str(entry.digest))
        table.add_row(*row)
    return table


def store_summary_line(summary: Summary) -> Text:
    paths = summary.files + summary.directories + summary.symlinks
    return Text(
        f"{_plural(paths, 'store path')}: {_counts(summary)}, "
        f"NAR size {summary.total_bytes:,} bytes ({decimal(summary.total_bytes)})",
        style="bold",
    )

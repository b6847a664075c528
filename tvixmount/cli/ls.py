"""``tvixmount ls``: list a store, or a store path's contents, without mounting.

Three renderings of one listing (:mod:`tvixmount.listing`):

- on a terminal, a tree (or an aligned table of store paths) coloured by
  type with rich styles, human sizes and a summary line;
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
from collections.abc import Iterable, Iterator

import trio
from rich.color import ColorSystem
from rich.console import Console
from rich.filesize import decimal
from rich.style import Style

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
            paint = Painter(console)
            _write_lines(table_lines(entries, args.long, paint))
            _write_lines([paint(store_summary_line(summarize_store(entries)), "bold")])
        else:
            _write_lines(plain_store_lines(entries, args.long))
        return 0
    listing = trio.run(_listing, args)
    if args.json:
        _print_json(to_nix_json(listing))
    elif console.is_terminal:
        paint = Painter(console)
        _write_lines(tree_lines(listing, args.long, paint))
        _write_lines([paint(summary_line(listing.summary()), "bold")])
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


def _write_lines(lines: Iterable[str]) -> None:
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


# --- terminal (rich styles) -------------------------------------------------------------


class Painter:
    """Applies rich styles as escape codes, or nothing when colour is off.

    Rich's layout engine (Tree, Table) costs about a millisecond per line,
    seconds for a store of 10,000 paths; the lines here are laid out
    directly and only styled by rich. The styles use the 16 standard
    colours, which every colour system renders the same.
    """

    def __init__(self, console: Console) -> None:
        self.enabled = console.color_system is not None and not console.no_color

    def __call__(self, text: str, style: str) -> str:
        if not self.enabled or not style:
            return text
        return Style.parse(style).render(text, color_system=ColorSystem.STANDARD)


def _label(entry: Entry, name: str, long: bool, paint: Painter) -> str:
    label = paint(name, _STYLES[kind_of(entry)])
    if entry.type is EntryType.REGULAR:
        label += paint(f"  {decimal(entry.size)}", "dim")
    if entry.target is not None:
        label += " -> " + paint(display_name(entry.target), "magenta")
    if long and entry.digest is not None:
        label += paint(f"  {entry.digest}", "dim")
    return label


def tree_lines(listing: Listing, long: bool, paint: Painter) -> Iterator[str]:
    """The listed path, then its entries under tree guides, like ``tree``."""
    yield _label(listing.root, listing.path, long, paint)
    yield from _branches(listing.root, "", long, paint)


def _branches(entry: Entry, prefix: str, long: bool, paint: Painter) -> Iterator[str]:
    children = entry.children or ()
    for i, child in enumerate(children):
        last = i == len(children) - 1
        guides = paint(prefix + ("└── " if last else "├── "), "dim")
        yield guides + _label(child, display_name(child.name), long, paint)
        yield from _branches(child, prefix + ("    " if last else "│   "), long, paint)


def table_lines(entries: list[StoreEntry], long: bool, paint: Painter) -> Iterator[str]:
    """Store paths in aligned columns: name, type, human NAR size, then digest or target."""
    width = max([len("store path"), *(len(e.name) for e in entries)])
    sizes = [decimal(e.nar_size) for e in entries]
    size_width = max([len("NAR size"), *(len(size) for size in sizes)])
    header = f"{'store path':<{width}}  {'type':<10}  {'NAR size':>{size_width}}"
    yield paint(header + ("  castore digest" if long else ""), "bold")
    for entry, size in zip(entries, sizes, strict=True):
        kind = kind_of(entry)
        line = f"{paint(f'{entry.name:<{width}}', _STYLES[kind])}  {kind:<10}  {size:>{size_width}}"
        if long and entry.digest is not None:
            line += paint(f"  {entry.digest}", "dim")
        if entry.target is not None:
            line += "  -> " + paint(display_name(entry.target), "magenta")
        yield line


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _counts(summary: Summary) -> str:
    return (
        f"{_plural(summary.directories, 'directory', 'directories')}, "
        f"{_plural(summary.files, 'file')}, {_plural(summary.symlinks, 'symlink')}"
    )


def summary_line(summary: Summary) -> str:
    return f"{_counts(summary)}, {summary.total_bytes:,} bytes ({decimal(summary.total_bytes)})"


def store_summary_line(summary: Summary) -> str:
    paths = summary.files + summary.directories + summary.symlinks
    return (
        f"{_plural(paths, 'store path')}: {_counts(summary)}, "
        f"NAR size {summary.total_bytes:,} bytes ({decimal(summary.total_bytes)})"
    )

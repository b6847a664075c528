"""The terminal rendering of ``tvixmount ls``: a tree or a table, styled with rich.

Imported only when stdout is a terminal: rich costs tens of milliseconds
to import, which piped and ``--json`` listings need not pay.
"""

from __future__ import annotations

from collections.abc import Iterator

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
    summarize_store,
)
from .ls_render import kind_of, mode_of, write_lines

_STYLES = {
    "directory": "bold blue",
    "regular": "",
    "executable": "bold green",
    "symlink": "cyan",
}


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


def print_tree(console: Console, listing: Listing, long: bool, digests: bool) -> None:
    paint = Painter(console)
    write_lines(tree_lines(listing, long, digests, paint))
    write_lines([paint(summary_line(listing.summary()), "bold")])


def print_store_table(
    console: Console, entries: list[StoreEntry], long: bool, digests: bool
) -> None:
    paint = Painter(console)
    write_lines(table_lines(entries, long, digests, paint))
    write_lines([paint(store_summary_line(summarize_store(entries)), "bold")])


def _mode(entry: Entry | StoreEntry, long: bool, paint: Painter) -> str:
    """With ``long``, the mode string and a space that start the entry's line."""
    return paint(mode_of(entry), "dim") + " " if long else ""


def _label(entry: Entry, name: str, digests: bool, paint: Painter) -> str:
    label = paint(name, _STYLES[kind_of(entry)])
    if entry.type is EntryType.REGULAR:
        label += paint(f"  {decimal(entry.size)}", "dim")
    if entry.target is not None:
        label += " -> " + paint(display_name(entry.target), "magenta")
    if digests and entry.digest is not None:
        label += paint(f"  {entry.digest}", "dim")
    return label


def tree_lines(listing: Listing, long: bool, digests: bool, paint: Painter) -> Iterator[str]:
    """The listed path, then its entries under tree guides, like ``tree``."""
    yield _mode(listing.root, long, paint) + _label(listing.root, listing.path, digests, paint)
    # The guides of the ancestors, one per level, cut back to the entry's level.
    guides: list[str] = []
    for level, last, entry in listing.root.walk_levels():
        del guides[level - 1 :]
        branch = paint("".join(guides) + ("└── " if last else "├── "), "dim")
        label = _label(entry, display_name(entry.name), digests, paint)
        yield _mode(entry, long, paint) + branch + label
        guides.append("    " if last else "│   ")


def table_lines(
    entries: list[StoreEntry], long: bool, digests: bool, paint: Painter
) -> Iterator[str]:
    """Store paths in aligned columns: [mode,] name, type, human NAR size, then digest or target."""
    width = max([len("store path"), *(len(e.name) for e in entries)])
    sizes = [decimal(e.nar_size) for e in entries]
    size_width = max([len("NAR size"), *(len(size) for size in sizes)])
    header = f"{'store path':<{width}}  {'type':<10}  {'NAR size':>{size_width}}"
    header = f"{'mode':<10} {header}" if long else header
    yield paint(header + ("  castore digest" if digests else ""), "bold")
    for entry, size in zip(entries, sizes, strict=True):
        kind = kind_of(entry)
        name = paint(f"{entry.name:<{width}}", _STYLES[kind])
        line = f"{_mode(entry, long, paint)}{name}  {kind:<10}  {size:>{size_width}}"
        if digests and entry.digest is not None:
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

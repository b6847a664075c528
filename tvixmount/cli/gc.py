"""``tvixmount gc [--store DIR] [--dry-run] [--max-freed BYTES] [--json]``.

Removes from an embedded store every blob, pack space and Directory that no
PathInfo reaches, and what interrupted imports left; safe beside mounts and
imports (docs/gc.md).
"""

from __future__ import annotations

import argparse
import json
import re

from .embedded import add_store_dir_argument, human_bytes, store_dir

_SIZE = re.compile(r"(\d+)([KMGT]?)(?:i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _bytes(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (e.g. 1000000, 500M, 2G)")
    return int(match[1]) * _UNITS[match[2].lower()]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gc",
        help="collect garbage in an embedded store (like nix store gc)",
        description="Remove every blob, pack space and Directory no store path reaches.",
    )
    add_store_dir_argument(parser)
    parser.add_argument("--dry-run", action="store_true", help="only report what would be freed")
    parser.add_argument(
        "--max-freed", metavar="BYTES", type=_bytes, help="stop once this many bytes are freed"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..stores.local.gc import collect

    report = collect(store_dir(args, "gc"), dry_run=args.dry_run, max_freed=args.max_freed)
    if args.json:
        print(json.dumps(report.as_json()))
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    print(
        f"{verb} {report.blobs} blobs ({human_bytes(report.blob_bytes)}) and "
        f"{report.directories} directories; {report.packs_removed} packs removed, "
        f"{report.packs_rewritten} rewritten; "
        f"{human_bytes(report.freed)} {'would be ' if report.dry_run else ''}freed"
    )
    return 0

"""``tvixmount info [--store DIR] [--json]``: what an embedded store holds, what gc frees."""

from __future__ import annotations

import argparse
import json

from .embedded import add_store_dir_argument, human_bytes, store_dir


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show an embedded store's paths, sizes and reclaimable space",
        description="Paths, total NAR size, blob bytes, bytes on disk and what gc would free.",
    )
    add_store_dir_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..stores.local.usage import usage

    figures = usage(store_dir(args, "info"))
    if args.json:
        print(json.dumps(figures.as_json()))
        return 0
    print(f"store:             {figures.root}")
    print(f"paths:             {figures.paths}")
    print(f"NAR size:          {human_bytes(figures.nar_size)}")
    print(f"blob bytes:        {human_bytes(figures.blob_bytes)}")
    print(f"bytes on disk:     {human_bytes(figures.disk_bytes)}")
    print(f"reclaimable bytes: {human_bytes(figures.reclaimable_bytes)}")
    return 0

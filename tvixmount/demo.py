"""``make run`` / ``make stop``: the README's demo on the embedded default store.

``python -m tvixmount.demo up MNT`` imports the store paths under
``tests/fixtures/demo`` into the embedded store, mounts it at MNT (listing
allowed) in the background with the real CLI, and shows what is there.
``python -m tvixmount.demo down MNT`` unmounts and waits for the server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import trio

from .errors import TvixmountError
from .fs.mount import is_mounted, unmount
from .importer import import_path
from .pathinfo.model import PathInfo
from .stores import StoreOptions, default_store_url, open_store

DEMO_SOURCE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "demo"


async def import_demo(source: Path) -> list[PathInfo]:
    """Import every entry of ``source`` as its own store path (idempotent)."""
    store = open_store(None, StoreOptions(create=True))
    try:
        return [await import_path(store, entry) for entry in sorted(source.iterdir())]
    finally:
        await store.aclose()


def _describe(path: Path) -> str:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return f"{path.name} -> {os.readlink(path)}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path.name}/"
    mode = "executable, " if st.st_mode & 0o111 else ""
    return f"{path.name}  ({mode}{st.st_size} bytes)"


def tree(path: Path, prefix: str = "") -> Iterator[str]:
    """``tree``-style lines for everything below ``path``."""
    entries = sorted(path.iterdir(), key=lambda p: os.fsencode(p.name))
    for i, entry in enumerate(entries):
        last = i == len(entries) - 1
        yield f"{prefix}{'└── ' if last else '├── '}{_describe(entry)}"
        if entry.is_dir() and not entry.is_symlink():
            yield from tree(entry, prefix + ("    " if last else "│   "))


def up(mountpoint: Path) -> int:
    infos = trio.run(import_demo, DEMO_SOURCE)
    print(f"imported {len(infos)} store paths from {DEMO_SOURCE} into {default_store_url()}")
    mountpoint.mkdir(parents=True, exist_ok=True)
    absolute = mountpoint.resolve()
    if is_mounted(str(absolute)):
        print(f"{mountpoint} is already mounted; showing it (make stop unmounts)")
    else:
        result = subprocess.run(
            [sys.executable, "-m", "tvixmount", "mount", str(absolute), "--list-root"],
            check=False,
        )
        if result.returncode != 0:
            return result.returncode
        print(f"mounted the embedded store at {mountpoint} (read-only, FUSE)")
    print()
    print(f"{mountpoint}/")
    for line in tree(absolute):
        print(line)
    hello = next((i for i in infos if i.store_path.name == "hello"), None)
    print()
    if hello is not None:
        print(f"try:   {mountpoint}/{hello.store_path}/bin/hello")
    print(f"       ls -liR {mountpoint}/   (identical content shares an inode)")
    print("stop:  make stop")
    return 0


def down(mountpoint: Path) -> int:
    absolute = mountpoint.absolute()
    if not is_mounted(str(absolute)):
        print(f"nothing is mounted at {mountpoint}")
        return 0
    unmount(absolute)
    print(f"unmounted {mountpoint}")
    # Not empty or already gone: leave whatever the user put there.
    with contextlib.suppress(OSError):
        mountpoint.rmdir()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tvixmount.demo", description=__doc__)
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("mountpoint", type=Path)
    args = parser.parse_args(argv)
    try:
        return up(args.mountpoint) if args.action == "up" else down(args.mountpoint)
    except TvixmountError as exc:
        print(f"tvixmount: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

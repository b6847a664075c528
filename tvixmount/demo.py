"""``make run`` / ``make stop``: the README's demo on the embedded default store.

``python -m tvixmount.demo up MNT`` writes the demo tree (:data:`DEMO_TREE`)
to a temporary directory, imports each of its top-level entries into the
embedded store as a store path, mounts the store at MNT (listing allowed) in
the background with the real CLI, and shows what is there.
``python -m tvixmount.demo down MNT`` unmounts and waits for the server.

The tree is described here rather than kept as files next to the code: a
wheel keeps neither symlinks nor, reliably, executable bits, and the demo
must work from an installed package as well as from a checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from .errors import TvixmountError
from .fs.mountpoint import unmount
from .fs.mounttable import tvixmount_at
from .importer import import_path
from .pathinfo.model import PathInfo
from .stores import StoreOptions, default_store_url, open_store


@dataclass(frozen=True, slots=True)
class File:
    text: str
    executable: bool = False


@dataclass(frozen=True, slots=True)
class Symlink:
    target: str


# Relative path -> what is there; directories follow from the paths. Each
# top-level entry becomes one store path: a lone file and a small package.
DEMO_TREE: Mapping[str, File | Symlink] = {
    "greeting.txt": File("Just one file as a store path.\n"),
    "hello/bin/hello": File(
        "#!/bin/sh\n"
        "# A store path's executable, run straight from the tvixmount mount.\n"
        'echo "Hello from tvixmount, served out of ${0%/bin/*}"\n',
        executable=True,
    ),
    "hello/bin/hi": Symlink("hello"),
    "hello/share/doc/hello/README": File(
        "hello: the tvixmount demo package.\n"
        "\n"
        "Everything under this store path is served read-only over FUSE from the\n"
        "embedded tvixmount store: files by BLAKE3 blob digest, directories by\n"
        "Directory digest, symlinks by target. Identical content shares one inode.\n"
    ),
    "hello/share/hello/nested/README": Symlink("../../doc/hello/README"),
    "hello/share/hello/nested/deeper/note.txt": File("deep inside the store path\n"),
}


def write_demo_tree(root: Path) -> Path:
    """Write :data:`DEMO_TREE` under ``root`` (created); returns ``root``."""
    for relative, item in DEMO_TREE.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(item, Symlink):
            path.symlink_to(item.target)
        else:
            path.write_text(item.text)
            path.chmod(0o755 if item.executable else 0o644)
    return root


async def import_demo() -> list[PathInfo]:
    """Import every top-level entry of the demo tree as its own store path (idempotent)."""
    store = open_store(None, StoreOptions(create=True))
    try:
        with tempfile.TemporaryDirectory(prefix="tvixmount-demo-") as tmp:
            source = write_demo_tree(Path(tmp))
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
    infos = trio.run(import_demo)
    print(f"imported {len(infos)} demo store paths into {default_store_url()}")
    mountpoint.mkdir(parents=True, exist_ok=True)
    absolute = mountpoint.resolve()
    if tvixmount_at(str(absolute)):
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
    if not tvixmount_at(str(absolute)):
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
    except OSError as exc:  # the mount point: cannot be created, or not a directory
        print(f"tvixmount: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

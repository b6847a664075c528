"""Synthetic stores written through the service API: many path infos, many inodes.

stat/lookup never read blob contents, so file nodes here point at digests
that have no blob: the store stays small while the inode count is large.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from tvixmount.castore import B3Digest, Directory, DirectoryNode, FileNode
from tvixmount.pathinfo import NarInfo, PathInfo
from tvixmount.storepath import from_nar_hash
from tvixmount.stores import StoreOptions, open_store


def _digest(*parts: object) -> B3Digest:
    return B3Digest.of(repr(parts).encode())


async def _build(store_dir: Path, paths: int, files_per_path: int) -> list[str]:
    store = open_store(str(store_dir), StoreOptions(create=True))
    names: list[str] = []
    try:
        for i in range(paths):
            fake_nar = hashlib.sha256(f"{store_dir.name}-{i}".encode()).digest()
            store_path = from_nar_hash(fake_nar, f"synthetic-{i}")
            root: FileNode | DirectoryNode
            if files_per_path == 0:
                root = FileNode(str(store_path).encode(), _digest(i), 1, False)
            else:
                directory = Directory.from_nodes(
                    FileNode(f"f{j:06d}".encode(), _digest(i, j), 1, False)
                    for j in range(files_per_path)
                )
                await store.directories.put_many([directory])
                root = DirectoryNode(str(store_path).encode(), directory.digest(), directory.size())
            await store.pathinfos.put(PathInfo(root, (), NarInfo(1, fake_nar)))
            names.append(str(store_path))
    finally:
        await store.aclose()
    return names


def build_store(store_dir: Path, paths: int, files_per_path: int) -> list[str]:
    """Create (once) a store of ``paths`` store paths; returns their basenames."""
    index = store_dir / "names.txt"
    if index.exists():
        return index.read_text().split()
    names = trio.run(_build, store_dir, paths, files_per_path)
    index.write_text("\n".join(names) + "\n")
    return names

"""Benchmark data of realistic shape, generated deterministically.

A Nix closure is mostly small files (headers, scripts, .so stubs, docs), a few
large ones, some symlinks and executables, spread over many store paths. The
tree here has that mix: ``TREE_PATHS`` store paths with about ``TREE_ENTRIES``
entries in all, plus one store path holding a single 256 MiB file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

BIG_FILE_SIZE = 256 << 20
TREE_PATHS = 1000
TREE_ENTRIES = 100_000
_ENTRIES_PER_PATH = TREE_ENTRIES // TREE_PATHS


def _file_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.70:
        return rng.randint(0, 2048)
    if roll < 0.95:
        return rng.randint(2048, 32 << 10)
    if roll < 0.995:
        return rng.randint(32 << 10, 512 << 10)
    return rng.randint(512 << 10, 4 << 20)


def _content(rng: random.Random, size: int) -> bytes:
    # Mostly compressible text-like bytes with a random prefix so files differ.
    head = rng.randbytes(min(size, 64))
    body = (b"lorem ipsum dolor sit amet nix store path " * (size // 42 + 1))[: size - len(head)]
    return head + body


def make_store_tree(root: Path, index: int, rng: random.Random) -> int:
    """One store path's tree: nested dirs, files, executables, symlinks. Returns entry count."""
    root.mkdir(parents=True)
    dirs = [root]
    entries = 0
    while entries < _ENTRIES_PER_PATH - 1:
        parent = rng.choice(dirs)
        roll = rng.random()
        name = f"e{entries:03d}"
        if roll < 0.12 and len(dirs) < 20:
            child = parent / name
            child.mkdir()
            dirs.append(child)
        elif roll < 0.20:
            os.symlink(f"../target-{index}-{entries}", parent / name)
        else:
            path = parent / name
            path.write_bytes(_content(rng, _file_size(rng)))
            if roll > 0.93:
                path.chmod(0o755)
        entries += 1
    return entries + 1


def generate(data_dir: Path) -> tuple[Path, list[Path]]:
    """Create (once) the big file's tree and the store-path trees; returns their roots."""
    big = data_dir / "src" / "bigfile"
    trees_root = data_dir / "src" / "trees"
    done = data_dir / "src" / ".complete"
    trees = [trees_root / f"pkg{i:04d}" for i in range(TREE_PATHS)]
    if done.exists():
        return big, trees
    rng = random.Random(20261122)
    big.mkdir(parents=True, exist_ok=True)
    with open(big / "blob.bin", "wb") as out:
        chunk = rng.randbytes(1 << 20)
        for i in range(BIG_FILE_SIZE >> 20):
            out.write(bytes([i & 0xFF]) + chunk[1:])
    for i, tree in enumerate(trees):
        if not tree.exists():
            make_store_tree(tree, i, rng)
    done.write_text("ok\n")
    return big, trees

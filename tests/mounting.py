"""Real FUSE mounts for tests: a fixture store, and mounts that always go away.

The mounts themselves come from the product's harness
(:mod:`tvixmount.testing.mounts`, shared with the pytest plugin and bench/):
the real CLI in a subprocess, unmounted and reaped in ``finally``.
"""

from __future__ import annotations

import os
import select
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from tests.fixtures import castore as fx
from tvixmount.castore.blobservice import put_stream
from tvixmount.castore.nodes import Node
from tvixmount.importer import import_path
from tvixmount.nar.writer import calculate_nar
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.stores import Store, StoreOptions, open_store
from tvixmount.testing.mounts import (
    Mount,
    force_unmount,
    foreground_mount,
    foreground_server,
    mounted,
    run_tvixmount,
    tvixmount_command,
)

__all__ = [
    "Mount",
    "force_unmount",
    "foreground_mount",
    "foreground_server",
    "import_trees",
    "make_fixture_store",
    "mounted",
    "read_until",
    "requires_fuse",
    "requires_nix",
    "run_tvixmount",
    "tvixmount_command",
]

requires_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse"), reason="FUSE tests need /dev/fuse"
)
requires_nix = pytest.mark.skipif(
    shutil.which("nix-store") is None, reason="needs Nix (nix-store) as the oracle"
)


def read_until(fd: int, text: bytes, timeout: float = 60.0) -> bytes:
    """What a terminal's controller ``fd`` shows until ``text`` appears (fails past ``timeout``)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no {text!r} on the terminal; saw {seen!r}")
        try:
            seen += os.read(fd, 4096)
        except OSError as exc:  # EIO: every process let go of the terminal
            raise AssertionError(f"no {text!r} on the terminal; saw {seen!r}") from exc
    return seen


async def _put_pathinfo(store: Store, node: Node) -> None:
    try:
        nar_size, nar_sha256 = await calculate_nar(node, store.blobs, store.directories)
    except Exception:
        # Fixtures with missing pieces (the EIO tests) have no computable NAR.
        nar_size, nar_sha256 = 0, bytes(32)
    await store.pathinfos.put(PathInfo(node, (), NarInfo(nar_size, nar_sha256)))


async def _populate(
    url: str, blobs: Sequence[bytes], with_directories: bool, roots: Sequence[Node]
) -> None:
    store = open_store(url, StoreOptions(create=True))
    try:
        for blob in blobs:
            await put_stream(store.blobs, [blob])
        if with_directories:
            await store.directories.put_many(fx.DIRECTORIES)
        for node in roots:
            await _put_pathinfo(store, node)
    finally:
        await store.aclose()


def make_fixture_store(
    path: Path,
    *,
    blobs: Sequence[bytes] = fx.BLOBS,
    with_directories: bool = True,
    roots: Sequence[Node] = fx.ROOT_NODES,
) -> str:
    """An embedded store holding the tvix fixtures (parts may be left out); returns its URL."""
    trio.run(_populate, str(path), blobs, with_directories, roots)
    return str(path)


async def _import_all(url: str, trees: Sequence[Path]) -> list[PathInfo]:
    store = open_store(url, StoreOptions(create=True))
    try:
        return [await import_path(store, tree) for tree in trees]
    finally:
        await store.aclose()


def import_trees(store_dir: Path, *trees: Path) -> list[PathInfo]:
    """``trees`` imported in order into the embedded store at ``store_dir`` (created)."""
    return trio.run(_import_all, str(store_dir), trees)

"""Shared by the gc, delete, verify, info and interrupted-import tests."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import trio

from tests.mounting import run_tvixmount, tvixmount_command
from tvixmount.castore.blobservice import put_stream
from tvixmount.castore.nodes import FileNode, rename
from tvixmount.nar.writer import calculate_nar
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.storepath import StorePath, from_nar_hash
from tvixmount.stores import StoreOptions, open_store
from tvixmount.stores.local.usage import disk_bytes

__all__ = [
    "disk_bytes",
    "import_paths",
    "json_of",
    "nar_of",
    "one_error_line",
    "put_with_references",
]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI failed with exactly one line on stderr (no traceback)."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tvixmount: error: "), lines
    return lines[0]


def import_paths(store: Path, *paths: Path) -> list[str]:
    result = run_tvixmount("import", *paths, "--store", store, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def nar_of(store: Path, path: str) -> bytes:
    result = subprocess.run(
        tvixmount_command("nar", path, "--store", store), capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def json_of(*args: str | os.PathLike[str]) -> Any:
    result = run_tvixmount(*args, "--json", timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def put_with_references(store: Path, name: str, data: bytes, references: list[str]) -> str:
    """A one-file store path referring to ``references``; returns its path.

    References are absolute paths, or ``"self"`` for the new path itself.
    """

    async def put() -> str:
        opened = open_store(str(store), StoreOptions(create=True))
        try:
            digest = await put_stream(opened.blobs, [data])
            node = FileNode(b"file", digest, len(data), False)
            nar_size, nar_sha256 = await calculate_nar(node, opened.blobs, opened.directories)
            path = from_nar_hash(nar_sha256, name)
            refs = sorted(path if r == "self" else StorePath.parse(r) for r in references)
            info = PathInfo(
                rename(node, str(path).encode()),
                tuple(r.digest for r in refs),
                NarInfo(nar_size, nar_sha256, reference_names=tuple(str(r) for r in refs)),
            )
            await opened.pathinfos.put(info)
            return path.absolute
        finally:
            await opened.aclose()

    return trio.run(put)

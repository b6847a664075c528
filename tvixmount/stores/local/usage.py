"""What an embedded store holds: paths, NAR and blob bytes, disk usage, what gc would free."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ...errors import StoreError
from .gc import blob_files, collect
from .pathinfo import LocalPathInfoService
from .store import open_local


@dataclass(frozen=True)
class Usage:
    root: Path
    paths: int
    nar_size: int
    blob_bytes: int  # the stored blobs' own sizes, each blob once
    disk_bytes: int  # what the store directory takes on disk, database included
    reclaimable_bytes: int  # what ``gc`` would free now

    def as_json(self) -> dict[str, int | str]:
        return {
            "store": str(self.root),
            "paths": self.paths,
            "narSize": self.nar_size,
            "blobBytes": self.blob_bytes,
            "diskBytes": self.disk_bytes,
            "reclaimableBytes": self.reclaimable_bytes,
        }


def disk_bytes(root: Path) -> int:
    """Bytes allocated to the files under ``root`` (``du``'s count)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def usage(root: Path) -> Usage:
    blobs, _, pathinfos, db = open_local(root, create=False)
    try:
        paths, nar_size = _paths(pathinfos)
        (packed,) = db.execute("SELECT coalesce(sum(size), 0) FROM packed_blobs").fetchone()
        files = 0
        for _, entry in blob_files(root / "blobs"):
            try:
                files += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    except sqlite3.Error as exc:
        raise StoreError(f"{root}: {exc}") from exc
    finally:
        blobs.close()
        db.close()
    reclaimable = collect(root, dry_run=True).freed
    return Usage(root, paths, nar_size, packed + files, disk_bytes(root), reclaimable)


def _paths(pathinfos: LocalPathInfoService) -> tuple[int, int]:
    import trio

    async def count() -> tuple[int, int]:
        paths = nar_size = 0
        async for info in pathinfos.list():
            paths += 1
            nar_size += info.narinfo.nar_size
        return paths, nar_size

    return trio.run(count)

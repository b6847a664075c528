"""The embedded local store: a directory holding SQLite metadata and blob files.

Layout::

    DIR/tvixmount-store     marker with the format version
    DIR/store.sqlite        directories + pathinfos tables (WAL mode)
    DIR/blobs/xx/<hex>      content-addressed blob files
    DIR/tmp/                blobs being written

SQLite in WAL mode lets readers in many processes run while one writer
writes; a busy timeout makes concurrent writers wait instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .castore.local import LocalBlobService, LocalDirectoryService
from .errors import StoreError
from .pathinfo.local import LocalPathInfoService

MARKER = "tvixmount-store"
FORMAT = "tvixmount-store 1\n"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS directories (digest BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pathinfos (
    digest BLOB PRIMARY KEY, name TEXT NOT NULL, data BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pathinfos_by_name ON pathinfos (name);
"""


def default_store_dir() -> Path:
    env = os.environ.get("TVIXMOUNT_STORE")
    if env:
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data_home) / "tvixmount"


# What a store directory holds before its marker exists: another process may be
# creating the same store right now, and that must not look like a foreign dir.
_OWN_NAMES = {MARKER, "blobs", "tmp", "store.sqlite", "store.sqlite-wal", "store.sqlite-shm"}


def _is_store(root: Path) -> bool:
    try:
        marker = (root / MARKER).read_text()
    except OSError:
        return False
    if marker != FORMAT:
        raise StoreError(
            f"{root} is a tvixmount store of an unsupported format {marker.strip()!r} "
            f"(this version reads {FORMAT.strip()!r})"
        )
    return True


def _initialise(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        if any(p.name not in _OWN_NAMES and not p.name.startswith(MARKER) for p in root.iterdir()):
            raise StoreError(f"{root} is not empty and not a tvixmount store; refusing to use it")
        (root / "blobs").mkdir(exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
        # The marker appears atomically and last: its presence means "complete".
        staging = root / f"{MARKER}.{os.getpid()}"
        staging.write_text(FORMAT)
        os.replace(staging, root / MARKER)
    except OSError as exc:
        raise StoreError(f"cannot create store at {root}: {exc}") from exc


def open_local(
    root: Path, create: bool
) -> tuple[LocalBlobService, LocalDirectoryService, LocalPathInfoService, sqlite3.Connection]:
    """Open (or with ``create``, create) the store at ``root``."""
    if not _is_store(root):
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is not a tvixmount store (not a directory)")
        if not create:
            if not root.exists():
                raise StoreError(
                    f"no tvixmount store at {root} (import something first: tvixmount import PATH)"
                )
            raise StoreError(f"{root} is not a tvixmount store (no {MARKER} marker)")
        _initialise(root)
    try:
        db = sqlite3.connect(
            root / "store.sqlite", timeout=30, check_same_thread=False, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise StoreError(f"{root}: cannot open store database: {exc}") from exc
    try:
        db.isolation_level = "DEFERRED"
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        (root / "blobs").mkdir(exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
    except (sqlite3.Error, OSError) as exc:
        db.close()
        raise StoreError(f"{root}: cannot open store database: {exc}") from exc
    return LocalBlobService(root), LocalDirectoryService(db), LocalPathInfoService(db), db

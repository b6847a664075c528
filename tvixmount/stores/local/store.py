"""The embedded local store: a directory holding SQLite metadata, packs and blob files.

Layout (format 2)::

    DIR/tvixmount-store     marker with the format version
    DIR/store.sqlite        directories, pathinfos, packs, packed_blobs (WAL mode)
    DIR/packs/<name>.pack   small blobs (<= 128 KiB) appended back to back
    DIR/blobs/xx/<hex>      bigger blobs, one content-addressed file each
    DIR/tmp/                big blobs being written

``packed_blobs`` maps a blob digest to (pack id, offset, size); ``packs``
maps a pack id to its file name. ``directories`` is a rowid table, so the
Directories of one import lie together on disk in insertion order and a cold
walk of one store path reads few pages.

A format-1 store (every blob a file, ``directories`` keyed by digest without
rowid) is upgraded in place when opened: the new tables are created and the
marker rewritten. Its blob files and directories stay valid as they are.

SQLite in WAL mode lets readers in many processes run while one writer
writes; a busy timeout makes concurrent writers wait instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ...errors import StoreError
from .castore import LocalBlobService, LocalDirectoryService
from .pathinfo import LocalPathInfoService

MARKER = "tvixmount-store"
FORMAT = "tvixmount-store 2\n"
# Older formats this version opens and upgrades to FORMAT.
_UPGRADABLE = frozenset({"tvixmount-store 1\n"})

# Format-1 stores keep their WITHOUT ROWID directories table: both shapes answer
# the same queries, and rewriting it would cost a whole copy of the table.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS directories (
    id INTEGER PRIMARY KEY, digest BLOB UNIQUE NOT NULL, data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pathinfos (
    digest BLOB PRIMARY KEY, name TEXT NOT NULL, data BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pathinfos_by_name ON pathinfos (name);
CREATE TABLE IF NOT EXISTS packs (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS packed_blobs (
    digest BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,
    size INTEGER NOT NULL
) WITHOUT ROWID;
"""


def default_store_dir() -> Path:
    env = os.environ.get("TVIXMOUNT_STORE")
    if env:
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data_home) / "tvixmount"


# What a store directory holds before its marker exists: another process may be
# creating the same store right now, and that must not look like a foreign dir.
_DIRS = ("blobs", "packs", "tmp")
# A database up to this size is read into the page cache when a mount starts.
WARM_MAX = 256 << 20
_OWN_NAMES = {MARKER, *_DIRS, "store.sqlite", "store.sqlite-wal", "store.sqlite-shm"}


def _store_format(root: Path) -> str | None:
    """The store's marker (FORMAT or an upgradable one), or None if ``root`` is no store."""
    try:
        marker = (root / MARKER).read_text()
    except OSError:
        return None
    if marker != FORMAT and marker not in _UPGRADABLE:
        raise StoreError(
            f"{root} is a tvixmount store of an unsupported format {marker.strip()!r} "
            f"(this version reads {FORMAT.strip()!r})"
        )
    return marker


def _write_marker(root: Path) -> None:
    """Atomically: readers see the old marker or the complete new one."""
    staging = root / f"{MARKER}.{os.getpid()}"
    staging.write_text(FORMAT)
    os.replace(staging, root / MARKER)


def _initialise(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        if any(p.name not in _OWN_NAMES and not p.name.startswith(MARKER) for p in root.iterdir()):
            raise StoreError(f"{root} is not empty and not a tvixmount store; refusing to use it")
        for name in _DIRS:
            (root / name).mkdir(exist_ok=True)
        # The marker appears atomically and last: its presence means "complete".
        _write_marker(root)
    except OSError as exc:
        raise StoreError(f"cannot create store at {root}: {exc}") from exc


def open_local(
    root: Path, create: bool
) -> tuple[LocalBlobService, LocalDirectoryService, LocalPathInfoService, sqlite3.Connection]:
    """Open (or with ``create``, create) the store at ``root``."""
    marker = _store_format(root)
    if marker is None:
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
        for name in _DIRS:
            (root / name).mkdir(exist_ok=True)
        if marker is not None and marker != FORMAT:
            # Only now: the tables the new format needs exist.
            _write_marker(root)
    except (sqlite3.Error, OSError) as exc:
        db.close()
        raise StoreError(f"{root}: cannot open store database: {exc}") from exc
    return LocalBlobService(root, db), LocalDirectoryService(db), LocalPathInfoService(db), db


def warm_index(root: Path) -> None:
    """Start reading the store's database into the page cache; returns at once.

    Every lookup of a store path and every first listing of a directory is
    a few random page reads in it. On a cold cache (just booted, or after
    the kernel dropped it) each of those is a disk read, and the first
    lookups after a mount pay milliseconds each. One readahead of the whole
    file, if it is small enough to be worth holding, turns that into
    sequential I/O in the background. Best effort: errors are ignored.
    """
    for name in ("store.sqlite", "store.sqlite-wal"):
        try:
            fd = os.open(root / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_size <= WARM_MAX:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)

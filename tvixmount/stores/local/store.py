"""The embedded local store: a directory holding SQLite metadata, packs and blob files.

Layout (format 2)::

    DIR/tvixmount-store     marker with the format version
    DIR/store.sqlite        directories, pathinfos, packs, packed_blobs (WAL mode)
    DIR/packs/<name>.pack   small blobs (<= 128 KiB) appended back to back
    DIR/blobs/xx/<hex>      bigger blobs, one content-addressed file each
    DIR/tmp/                big blobs being written
    DIR/gc.lock             held (flock) by a running ``gc``

``packed_blobs`` maps a blob digest to (pack id, offset, size); ``packs``
maps a pack id to its file name. ``directories`` is a rowid table, so the
Directories of one import lie together on disk in insertion order and a cold
walk of one store path reads few pages.

``leases`` and the ``gen`` columns (of ``directories``, ``packed_blobs`` and
``blob_files``, which only records the lease of a blob file's last writer)
let ``gc`` run while other processes import: see docs/gc.md and
:mod:`.lease`.

A format-1 store (every blob a file, ``directories`` keyed by digest without
rowid) is upgraded in place when opened: the new tables are created and the
marker rewritten. Its blob files and directories stay valid as they are.

SQLite in WAL mode lets readers in many processes run while one writer
writes; a busy timeout makes concurrent writers wait instead of failing.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import time
import urllib.parse
from pathlib import Path

from ...errors import StoreError
from .castore import LocalBlobService, LocalDirectoryService
from .lease import Lease, process_alive
from .pathinfo import LocalPathInfoService

MARKER = "tvixmount-store"
# Seconds SQLite waits out another connection's lock (connect's ``timeout``); the
# schema set-up retries a lock SQLite refuses to wait for as long.
_BUSY_TIMEOUT = 30.0
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
CREATE TABLE IF NOT EXISTS blob_files (digest BLOB PRIMARY KEY, gen INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER NOT NULL, started INTEGER NOT NULL
);
"""
# Stores made before gc existed lack these columns; their objects count as generation 0.
_GEN_TABLES = ("directories", "packed_blobs")


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
_OWN_NAMES = {
    MARKER,
    *_DIRS,
    "gc.lock",
    "store.sqlite",
    "store.sqlite-wal",
    "store.sqlite-shm",
    "store.sqlite-journal",
}


def _read_small(path: Path) -> str | None:
    """A small text file's contents, None if absent; anything but a regular file is an error.

    Opened non-blocking: a FIFO planted where the file should be must not
    hang the open (it has no writer).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path} is not a regular file")
        return os.read(fd, 4096).decode(errors="replace")
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _store_format(root: Path) -> str | None:
    """The store's marker (FORMAT or an upgradable one), or None if ``root`` is no store."""
    if not root.is_dir():
        return None
    marker = _read_small(root / MARKER)
    if marker is None:
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
        # The database exists before the marker: a marked store whose database
        # is missing or empty has lost its metadata, and is never recreated.
        _connect(root, read_only=False).close()
        # The marker appears atomically and last: its presence means "complete".
        _write_marker(root)
    except OSError as exc:
        raise StoreError(f"cannot create store at {root}: {exc}") from exc


def _writable(root: Path) -> bool:
    # access(2) also answers EROFS for a read-only mount, even to root.
    return os.access(root, os.W_OK) and os.access(root / "store.sqlite", os.W_OK)


def _connect(root: Path, read_only: bool) -> sqlite3.Connection:
    """The store's database, its schema in place unless ``read_only``."""
    path = root / "store.sqlite"
    try:
        if read_only:
            # A WAL database is read through its -shm file, which a reader that
            # may not write cannot create; ``immutable`` then reads the file as
            # it is (nobody who cannot write it changes it through us).
            quoted = urllib.parse.quote(str(path))
            try:
                db = sqlite3.connect(
                    f"file:{quoted}?mode=ro",
                    uri=True,
                    check_same_thread=False,
                    timeout=_BUSY_TIMEOUT,
                )
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                db = sqlite3.connect(
                    f"file:{quoted}?immutable=1", uri=True, check_same_thread=False
                )
        else:
            db = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
            )
    except sqlite3.Error as exc:
        raise StoreError(f"{root}: cannot open store database: {exc}") from exc
    try:
        db.isolation_level = "DEFERRED"
        if not read_only:
            _set_up_schema(db)
        db.execute("SELECT count(*) FROM pathinfos").fetchone()
    except sqlite3.Error as exc:
        db.close()
        raise StoreError(f"{root}: cannot open store database: {exc}") from exc
    return db


def _set_up_schema(db: sqlite3.Connection) -> None:
    """WAL mode and the schema, retried while another process does the same.

    Two imports creating one store at once both switch it to WAL and create
    its tables; SQLite answers a lock upgrade that could deadlock with "database
    is locked" at once, without waiting out the busy timeout, so the setup
    (idempotent) is tried again for as long as that timeout would have waited.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            for table in _GEN_TABLES:
                columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if "gen" not in columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN gen INTEGER NOT NULL DEFAULT 0")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            if db.in_transaction:
                db.rollback()
            time.sleep(0.05)


def _check_database(root: Path) -> None:
    """Refuse a marked store whose database is gone: recreating it would lose every path."""
    path = root / "store.sqlite"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StoreError(
            f"{root}: the store database store.sqlite is missing; refusing to recreate it empty"
        ) from None
    except OSError as exc:
        raise StoreError(f"{root}: cannot open store database: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"{root}: the store database store.sqlite is not a regular file")
    if st.st_size == 0:
        raise StoreError(
            f"{root}: the store database store.sqlite is empty (0 bytes); "
            "refusing to recreate it empty"
        )


def temp_owner(name: str) -> int | None:
    """The pid in a temp file's or pack's name (``blob-<pid>-...``, ``<pid>-....pack``)."""
    first = name.removeprefix("blob-").partition("-")[0]
    return int(first) if first.isdigit() else None


def remove_dead_temps(tmp_dir: Path, dry_run: bool = False) -> int:
    """Delete temp files whose writing process is gone; returns the bytes freed.

    With ``dry_run``, only counts them.
    """
    freed = 0
    try:
        entries = list(os.scandir(tmp_dir))
    except OSError:
        return 0
    for entry in entries:
        owner = temp_owner(entry.name)
        if owner is not None and process_alive(owner):
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_blocks * 512
            if dry_run:
                pass
            elif entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        freed += size
    return freed


def open_local(
    root: Path, create: bool
) -> tuple[LocalBlobService, LocalDirectoryService, LocalPathInfoService, sqlite3.Connection]:
    """Open (or with ``create``, create) the store at ``root``.

    A store this process may not write (a read-only mount, another owner's
    directory) opens read-only: reads work, writes fail with a StoreError.
    """
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
    _check_database(root)
    read_only = not _writable(root)
    if read_only and marker is not None and marker != FORMAT:
        raise StoreError(f"{root}: an old-format store must be upgraded, which needs write access")
    db = _connect(root, read_only)
    try:
        if not read_only:
            for name in _DIRS:
                (root / name).mkdir(exist_ok=True)
            if marker is not None and marker != FORMAT:
                # Only now: the tables the new format needs exist.
                _write_marker(root)
            if create:
                # A writer's open tidies up after writers that died (gc does too).
                remove_dead_temps(root / "tmp")
    except OSError as exc:
        db.close()
        raise StoreError(f"{root}: cannot open store: {exc}") from exc
    lease = Lease(db)
    return (
        LocalBlobService(root, db, lease, read_only=read_only),
        LocalDirectoryService(db, lease),
        LocalPathInfoService(db),
        db,
    )


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
            fd = os.open(root / name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_size <= WARM_MAX:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)

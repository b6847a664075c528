"""Garbage collection of the embedded store: everything no PathInfo reaches goes.

One pass, safe beside mounts and imports (docs/gc.md has the argument):

1. temp files and packs left by processes that are gone are removed;
2. under one SQLite write transaction (no other process can write
   meanwhile), every Directory and blob reachable from a PathInfo, or from
   an object marked with the generation of a live lease (an import that has
   not written its PathInfo yet), is marked; every other Directory row,
   packed-blob row and blob file is removed;
3. packs left empty are removed and packs mostly dead are rewritten: their
   live blobs are copied to a new pack, their rows moved in one
   transaction, the old file unlinked (a reader holding it open keeps
   reading it: unlinked files stay readable);
4. a database with much free space is compacted.

A dry run takes a read snapshot instead, changes nothing and reports what
would go. ``--max-freed`` stops removing files once that many bytes are freed.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ..._proto import castore_pb2
from ...castore.digest import B3Digest
from ...castore.nodes import DirectoryNode, FileNode
from ...errors import StoreError
from ...pathinfo.model import PathInfo
from .castore import create_pack, open_regular
from .lease import oldest_live_lease, process_alive, write_transaction
from .store import open_local, remove_dead_temps, temp_owner

# A pack whose live blobs fill less than this share of it is rewritten.
REWRITE_BELOW = 0.5
# A database with at least this much free space, and a quarter of it free, is compacted
# (VACUUM rewrites it whole: cheap for a small one, worth it only for much space).
_VACUUM_MIN = 256 << 10
_COPY_CHUNK = 8 << 20


@dataclass
class GcReport:
    """What a collection removed (or, dry, would remove); byte counts are disk usage."""

    dry_run: bool
    directories: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    packs_removed: int = 0
    packs_rewritten: int = 0
    temp_files_bytes: int = 0
    database_bytes: int = 0
    freed: int = 0

    def as_json(self) -> dict[str, int | bool]:
        return {
            "dryRun": self.dry_run,
            "freedBytes": self.freed,
            "blobs": self.blobs,
            "blobBytes": self.blob_bytes,
            "directories": self.directories,
            "packsRemoved": self.packs_removed,
            "packsRewritten": self.packs_rewritten,
            "tempFileBytes": self.temp_files_bytes,
            "databaseBytes": self.database_bytes,
        }


@dataclass
class _Marked:
    directories: set[bytes]
    blobs: set[bytes]


def _blocks(st: os.stat_result) -> int:
    return st.st_blocks * 512


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One gc at a time per store (a lock the kernel drops if the gc dies)."""
    try:
        fd = os.open(root / "gc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"{root}: cannot create gc.lock: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{root}: another gc is running on this store") from None
        yield
    finally:
        os.close(fd)


def _children(digest: bytes, data: bytes) -> tuple[list[bytes], list[bytes]]:
    """Digests of a stored Directory's subdirectories and files.

    A Directory whose bytes do not hash to its digest stops the collection:
    what it really refers to is unknown, and collecting by what the damaged
    bytes say could take a live subtree.
    """
    if B3Digest.of(data) != digest:
        raise StoreError(
            f"directory {B3Digest(digest)} is corrupt: gc stops; "
            "run tvixmount verify and delete the damaged paths"
        )
    msg = castore_pb2.Directory()
    msg.ParseFromString(data)  # it hashed right, so it was validated when stored
    return [d.digest for d in msg.directories], [f.digest for f in msg.files]


def _mark(db: sqlite3.Connection, cutoff: int) -> _Marked:
    """Everything reachable from a PathInfo or from an object of a live lease."""
    marked = _Marked(set(), set())
    pending: list[bytes] = []
    for (data,) in db.execute("SELECT data FROM pathinfos"):
        try:
            node = PathInfo.parse(data).node
        except ValueError as exc:  # DecodeError and ValidationError are ValueErrors
            raise StoreError(
                f"a stored path info is corrupt ({exc}); run tvixmount verify"
            ) from None
        if isinstance(node, DirectoryNode):
            pending.append(bytes(node.digest))
        elif isinstance(node, FileNode):
            marked.blobs.add(bytes(node.digest))
    pending.extend(
        d for (d,) in db.execute("SELECT digest FROM directories WHERE gen >= ?", (cutoff,))
    )
    marked.blobs.update(
        d for (d,) in db.execute("SELECT digest FROM packed_blobs WHERE gen >= ?", (cutoff,))
    )
    marked.blobs.update(
        d for (d,) in db.execute("SELECT digest FROM blob_files WHERE gen >= ?", (cutoff,))
    )
    query = "SELECT data FROM directories WHERE digest = ?"
    while pending:
        digest = pending.pop()
        if digest in marked.directories:
            continue
        marked.directories.add(digest)
        row = db.execute(query, (digest,)).fetchone()
        if row is None:
            continue  # missing: verify reports it; nothing below it can be marked
        directories, files = _children(digest, row[0])
        pending.extend(directories)
        marked.blobs.update(files)
    return marked


def blob_files(blob_dir: Path) -> Iterator[tuple[bytes, os.DirEntry[str]]]:
    """Every content-addressed blob file: (digest, entry). Other names are left alone."""
    try:
        shards = sorted(os.scandir(blob_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(shard.path):
            if len(entry.name) == 64 and entry.name.startswith(shard.name):
                try:
                    yield bytes.fromhex(entry.name), entry
                except ValueError:
                    continue


class _Collector:
    def __init__(
        self, root: Path, db: sqlite3.Connection, report: GcReport, max_freed: int | None
    ) -> None:
        self.root = root
        self.db = db
        self.report = report
        self.max_freed = max_freed
        # Dry run: what the sweep would take out of each pack, (rows, bytes) by pack id.
        self.dead_in_pack: dict[int, tuple[int, int]] = {}

    def room(self) -> bool:
        return self.max_freed is None or self.report.freed < self.max_freed

    def freed(self, count: int) -> None:
        self.report.freed += count

    def sweep(self) -> None:
        """Steps 2: mark and remove rows and blob files (inside the caller's transaction)."""
        db, report, dry = self.db, self.report, self.report.dry_run
        cutoff = oldest_live_lease(db, prune=not dry)
        marked = _mark(db, cutoff)
        dead_dirs = [
            (d,)
            for (d,) in db.execute("SELECT digest FROM directories WHERE gen < ?", (cutoff,))
            if d not in marked.directories
        ]
        report.directories = len(dead_dirs)
        dead_packed = [
            (d, size)
            for d, pack, size in db.execute(
                "SELECT digest, pack, size FROM packed_blobs WHERE gen < ?", (cutoff,)
            )
            if d not in marked.blobs and self._dead_in(pack, size)
        ]
        for digest, entry in blob_files(self.root / "blobs"):
            if digest in marked.blobs or not self.room():
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if not dry:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot remove {entry.path}: {exc.strerror}") from None
            report.blobs += 1
            report.blob_bytes += st.st_size
            self.freed(_blocks(st))
            if not dry:
                db.execute("DELETE FROM blob_files WHERE digest = ?", (digest,))
        report.blobs += len(dead_packed)
        report.blob_bytes += sum(size for _, size in dead_packed)
        if dry:
            return
        # Rows of files no longer there and not protected: nothing needs them.
        db.execute(
            "DELETE FROM blob_files WHERE gen < ? AND digest NOT IN"
            " (SELECT digest FROM packed_blobs)",
            (cutoff,),
        )
        db.executemany("DELETE FROM directories WHERE digest = ?", dead_dirs)
        db.executemany("DELETE FROM packed_blobs WHERE digest = ?", [(d,) for d, _ in dead_packed])

    def _dead_in(self, pack: int, size: int) -> bool:
        count, total = self.dead_in_pack.get(pack, (0, 0))
        self.dead_in_pack[pack] = (count + 1, total + size)
        return True

    def packs(self) -> None:
        """Step 3: remove empty packs, rewrite mostly dead ones (outside any transaction)."""
        pack_dir = self.root / "packs"
        recorded: dict[str, int] = {}
        for pack_id, name in self.db.execute("SELECT id, name FROM packs").fetchall():
            recorded[name] = pack_id
        try:
            entries = list(os.scandir(pack_dir))
        except FileNotFoundError:
            return
        live = {
            pack: (count, size)
            for pack, count, size in self.db.execute(
                "SELECT pack, count(*), sum(size) FROM packed_blobs GROUP BY pack"
            )
        }
        if self.report.dry_run:  # the sweep's deletes were not made
            for pack, (count, size) in self.dead_in_pack.items():
                left = live.get(pack, (0, 0))
                live[pack] = (left[0] - count, left[1] - size)
        for entry in entries:
            owner = temp_owner(entry.name)
            # A live process may be appending to its packs (rows not yet committed).
            if owner is None or (owner != os.getpid() and process_alive(owner)):
                continue
            if not self.room():
                return
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            pack_id = recorded.get(entry.name)
            count, size = live.get(pack_id, (0, 0)) if pack_id is not None else (0, 0)
            if count == 0:
                self._remove_pack(pack_id, Path(entry.path), st)
            elif size < st.st_size * REWRITE_BELOW and pack_id is not None:
                self._rewrite(pack_id, Path(entry.path), st, size)

    def _remove_pack(self, pack_id: int | None, path: Path, st: os.stat_result) -> None:
        if not self.report.dry_run:
            if pack_id is not None:
                # Checked again under the write lock: only gc moves rows out of a pack.
                with write_transaction(self.db):
                    (count,) = self.db.execute(
                        "SELECT count(*) FROM packed_blobs WHERE pack = ?", (pack_id,)
                    ).fetchone()
                if count:
                    return
            path.unlink(missing_ok=True)
        self.report.packs_removed += 1
        self.freed(_blocks(st))

    def _rewrite(self, pack_id: int, path: Path, st: os.stat_result, live_bytes: int) -> None:
        """Copy a pack's live blobs to a new pack, move their rows, unlink the old file.

        The ``packs`` row of the old pack stays: pack ids are never reused, so
        a reader that cached an fd under that id never reads another file.
        """
        report = self.report
        if report.dry_run:
            report.packs_rewritten += 1
            self.freed(_blocks(st) - live_bytes)
            return
        rows = self.db.execute(
            "SELECT digest, offset, size FROM packed_blobs WHERE pack = ? ORDER BY offset",
            (pack_id,),
        ).fetchall()
        old = open_regular(path)
        new_id, _, new = create_pack(self.db, path.parent, "gc")
        try:
            moves: list[tuple[int, int, bytes, int]] = []
            at = 0
            for digest, offset, size in rows:
                data = os.pread(old, size, offset)
                if len(data) != size:
                    raise StoreError(f"pack {path} is shorter than its index says")
                os.pwrite(new, data, at)
                moves.append((new_id, at, digest, pack_id))
                at += size
            os.fdatasync(new)
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            with write_transaction(self.db):
                self.db.executemany(
                    "UPDATE packed_blobs SET pack = ?, offset = ? WHERE digest = ? AND pack = ?",
                    moves,
                )
                (left,) = self.db.execute(
                    "SELECT count(*) FROM packed_blobs WHERE pack = ?", (pack_id,)
                ).fetchone()
            if not left:
                path.unlink(missing_ok=True)
                report.packs_rewritten += 1
                self.freed(_blocks(st) - _blocks(os.fstat(new)))
        except OSError as exc:
            raise StoreError(f"cannot rewrite pack {path}: {exc.strerror}") from None
        finally:
            os.close(old)
            os.close(new)

    def compact(self) -> None:
        """Step 4: give the database's free pages back to the file system when they are many."""
        page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0] * page_size
        total = self.db.execute("PRAGMA page_count").fetchone()[0] * page_size
        if free < _VACUUM_MIN or free * 4 < total:
            return
        if self.report.dry_run:
            self.report.database_bytes = free
            self.freed(free)
            return
        before = self._database_size()
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.report.database_bytes = max(0, before - self._database_size())
        self.freed(self.report.database_bytes)

    def _database_size(self) -> int:
        total = 0
        for name in ("store.sqlite", "store.sqlite-wal"):
            with suppress(FileNotFoundError):
                total += _blocks(os.stat(self.root / name))
        return total


def collect(root: Path, dry_run: bool = False, max_freed: int | None = None) -> GcReport:
    """Collect the garbage of the embedded store at ``root``; see the module docstring."""
    blobs, _, _, db = open_local(root, create=False)
    report = GcReport(dry_run)
    try:
        if blobs.read_only and not dry_run:
            raise StoreError(f"{root}: the store is read-only; gc needs write access")
        collector = _Collector(root, db, report, max_freed)
        if dry_run:
            report.temp_files_bytes = remove_dead_temps(root / "tmp", dry_run=True)
            collector.freed(report.temp_files_bytes)
            db.execute("BEGIN")
            try:
                collector.sweep()
                collector.packs()
                collector.compact()
            finally:
                db.rollback()
            return report
        with _exclusive(root):
            report.temp_files_bytes = remove_dead_temps(root / "tmp")
            collector.freed(report.temp_files_bytes)
            with write_transaction(db):
                collector.sweep()
            collector.packs()
            collector.compact()
    except sqlite3.Error as exc:
        raise StoreError(f"{root}: gc failed: {exc}") from exc
    finally:
        blobs.close()
        db.close()
    return report


__all__ = ["REWRITE_BELOW", "GcReport", "collect"]

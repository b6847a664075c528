"""Leases: how a writing process tells ``gc`` which objects are its own.

An import writes blobs and Directories first and its PathInfo last; until
then nothing reachable refers to them, and a ``gc`` running meanwhile would
take them for garbage. So every process that writes to the store first
takes a lease: a row in ``leases`` whose id (AUTOINCREMENT: ids are never
reused) becomes the generation (``gen``) of every object it writes, or finds
already stored and reuses. ``gc`` keeps every object whose generation is at
least that of the oldest lease still held by a live process, and what such
objects refer to (docs/gc.md has the whole argument).

A lease names its process by pid and start time, so one left by a process
that was killed (or a pid reused since) is recognised as dead: its objects
are garbage unless a PathInfo reached them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from ...errors import StoreError


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after its end.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19])


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (whoever it is: callers only use this to hold back)."""
    return process_start(pid) is not None


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A transaction holding SQLite's write lock from its start (BEGIN IMMEDIATE).

    Reads inside it see the state no other writer can change before it
    commits: a check and the write that depends on it are one step.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.rollback()
        raise
    db.commit()


class Lease:
    """This process's lease on one store, taken on its first write, dropped on close."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._id: int | None = None

    @property
    def gen(self) -> int:
        """The generation of what this process writes (takes the lease if not yet held)."""
        if self._id is None:
            pid = os.getpid()
            try:
                with self._db:
                    cursor = self._db.execute(
                        "INSERT INTO leases (pid, started) VALUES (?, ?)",
                        (pid, process_start(pid) or 0),
                    )
            except sqlite3.Error as exc:
                raise StoreError(f"local store: {exc}") from exc
            assert cursor.lastrowid is not None
            self._id = cursor.lastrowid
        return self._id

    def release(self) -> None:
        """Drop the lease: from now on only PathInfos keep what this process wrote."""
        if self._id is None:
            return
        lease, self._id = self._id, None
        try:
            with self._db:
                self._db.execute("DELETE FROM leases WHERE id = ?", (lease,))
        except sqlite3.Error:
            pass  # a lease left behind is recognised as dead once this process is gone


def oldest_live_lease(db: sqlite3.Connection, prune: bool) -> int:
    """The generation below which nothing is protected by a lease (call in a transaction).

    With ``prune``, leases of processes that are gone are deleted. With no live
    lease, it is the next generation to be handed out: every object written
    before now is then only kept if a PathInfo reaches it.
    """
    oldest: int | None = None
    for lease, pid, started in db.execute("SELECT id, pid, started FROM leases").fetchall():
        if process_start(pid) == started:
            oldest = lease if oldest is None else min(oldest, lease)
        elif prune:
            db.execute("DELETE FROM leases WHERE id = ?", (lease,))
    if oldest is not None:
        return oldest
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'leases'").fetchone()
    return (row[0] if row else 0) + 1

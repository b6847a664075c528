"""The embedded local store's PathInfoService: one SQLite table."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence

from ...errors import DecodeError, IntegrityError, NotFoundError, StoreError, ValidationError
from ...pathinfo.model import PathInfo
from ...storepath import StorePath
from .lease import write_transaction


class LocalPathInfoService:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def get(self, digest: bytes) -> PathInfo | None:
        try:
            row = self._db.execute(
                "SELECT data FROM pathinfos WHERE digest = ?", (digest,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"local store: {exc}") from exc
        if row is None:
            return None
        return _parse_row(row[0])

    async def put(self, info: PathInfo) -> PathInfo:
        store_path = info.validate()
        try:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO pathinfos (digest, name, data) VALUES (?, ?, ?)",
                    (store_path.digest, str(store_path), info.serialize()),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"local store: {exc}") from exc
        return info

    async def list(self) -> AsyncIterator[PathInfo]:
        try:
            rows = self._db.execute("SELECT data FROM pathinfos ORDER BY name").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"local store: {exc}") from exc
        for (data,) in rows:
            yield _parse_row(data)

    def delete(self, store_paths: Sequence[StorePath]) -> None:
        """Remove the path infos of ``store_paths``, all or none (their objects stay until gc).

        Refused (:class:`StoreError`) while another path that stays refers to
        one of them, as ``nix-store --delete`` refuses to delete a live path.
        The check and the delete are one write transaction, so a path put
        meanwhile cannot slip in a reference.
        """
        doomed = {path.digest: path for path in store_paths}
        try:
            with write_transaction(self._db):
                for path in store_paths:
                    row = self._db.execute(
                        "SELECT name FROM pathinfos WHERE digest = ?", (path.digest,)
                    ).fetchone()
                    if row is None or row[0] != str(path):
                        raise NotFoundError(f"path '{path.absolute}' is not in the store")
                for (data,) in self._db.execute("SELECT data FROM pathinfos"):
                    info = _parse_row(data)
                    if info.store_path.digest in doomed:
                        continue
                    for reference in info.references:
                        if reference in doomed:
                            raise StoreError(
                                f"cannot delete path '{doomed[reference].absolute}' since it is "
                                f"still alive: path '{info.store_path.absolute}' refers to it"
                            )
                self._db.executemany(
                    "DELETE FROM pathinfos WHERE digest = ?", [(digest,) for digest in doomed]
                )
        except sqlite3.Error as exc:
            raise StoreError(f"local store: {exc}") from exc

    async def aclose(self) -> None:
        pass


def _parse_row(data: bytes) -> PathInfo:
    # Rows were validated on put; a row that no longer parses is corruption.
    try:
        return PathInfo.parse(data)
    except (DecodeError, ValidationError) as exc:
        raise IntegrityError(f"local store: corrupt path info: {exc}") from exc

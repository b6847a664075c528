"""The embedded local store's PathInfoService: one SQLite table."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

from ...errors import DecodeError, IntegrityError, StoreError, ValidationError
from ...pathinfo.model import PathInfo


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

    async def aclose(self) -> None:
        pass


def _parse_row(data: bytes) -> PathInfo:
    # Rows were validated on put; a row that no longer parses is corruption.
    try:
        return PathInfo.parse(data)
    except (DecodeError, ValidationError) as exc:
        raise IntegrityError(f"local store: corrupt path info: {exc}") from exc

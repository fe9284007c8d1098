"""Rate windows in SQLite."""

from __future__ import annotations

from core.local.sqlite._connection import SqliteDatabase
from core.ports.storage import RateWindowStore


class SqliteRateWindowStore(SqliteDatabase, RateWindowStore):
    def hit_rate_window(self, key: str, *, expires_at: int) -> int:
        row = (
            self._conn()
            .execute(
                "INSERT INTO rate_windows (key, hits, expires_at) VALUES (?, 1, ?)"
                " ON CONFLICT (key) DO UPDATE SET hits = hits + 1 RETURNING hits",
                (key, expires_at),
            )
            .fetchone()
        )
        return int(row[0])

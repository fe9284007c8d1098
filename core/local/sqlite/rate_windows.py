"""Rate windows in SQLite."""

from __future__ import annotations

from core.local.sqlite._connection import SqliteDatabase
from core.ports.storage import RateWindowStore


class SqliteRateWindowStore(SqliteDatabase, RateWindowStore):
    def hit_rate_window(self, key: str, *, expires_at: int, amount: int = 1) -> int:
        row = (
            self._conn()
            .execute(
                "INSERT INTO rate_windows (key, hits, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET hits = hits + excluded.hits RETURNING hits",
                (key, amount, expires_at),
            )
            .fetchone()
        )
        return int(row[0])

    def rate_window_hits(self, key: str) -> int:
        row = self._conn().execute("SELECT hits FROM rate_windows WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else int(row[0])

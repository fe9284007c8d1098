"""Statistics counters in SQLite."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from core.local.sqlite._connection import SqliteDatabase
from core.ports.storage import CounterStore

# How long a counted batch is remembered (CounterStore.add_counters_once).
COUNTER_BATCH_TTL_S = 2 * 86_400


class SqliteCounterStore(SqliteDatabase, CounterStore):
    def add_counters(self, key: str, increments: Mapping[str, int], *, expires_at: int) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO counters (key, name, value, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key, name) DO UPDATE SET value = value + excluded.value,"
                " expires_at = excluded.expires_at",
                [(key, name, amount, expires_at) for name, amount in increments.items()],
            )

    def add_counters_once(
        self, batch_id: str, increments: Mapping[str, Mapping[str, int]], *, expires_at: int, now_s: int
    ) -> bool:
        if not any(increments.values()):
            return True
        with self._transaction() as conn:
            conn.execute("DELETE FROM counter_batches WHERE expires_at <= ?", (now_s,))
            added = conn.execute(
                "INSERT INTO counter_batches (id, expires_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                (batch_id, now_s + COUNTER_BATCH_TTL_S),
            ).rowcount
            if not added:
                return False
            conn.executemany(
                "INSERT INTO counters (key, name, value, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key, name) DO UPDATE SET value = value + excluded.value,"
                " expires_at = excluded.expires_at",
                [
                    (key, name, amount, expires_at)
                    for key, counts in increments.items()
                    for name, amount in counts.items()
                ],
            )
        return True

    def get_counters(self, keys: Collection[str]) -> dict[str, dict[str, int]]:
        keys = list(keys)
        found: dict[str, dict[str, int]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._conn().execute(
                f"SELECT key, name, value FROM counters WHERE key IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for key, name, value in rows:
                found.setdefault(key, {})[name] = value
        return found

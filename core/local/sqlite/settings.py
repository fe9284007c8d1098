"""Settings and sequences in SQLite."""

from __future__ import annotations

from typing import Any

import msgspec

from core.local.sqlite._connection import SqliteDatabase
from core.ports.storage import SettingStore


class SqliteSettingStore(SqliteDatabase, SettingStore):
    def get_setting(self, name: str) -> Any | None:
        row = self._conn().execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else msgspec.json.decode(row[0])

    def put_setting(self, name: str, value: Any) -> None:
        self._conn().execute(
            "INSERT INTO settings (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, msgspec.json.encode(value)),
        )

    def next_in_sequence(self, name: str) -> int:
        row = (
            self._conn()
            .execute(
                "INSERT INTO sequences (name, n) VALUES (?, 1)"
                " ON CONFLICT (name) DO UPDATE SET n = n + 1 RETURNING n",
                (name,),
            )
            .fetchone()
        )
        return int(row[0])

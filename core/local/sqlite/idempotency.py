"""Idempotency keys in SQLite."""

from __future__ import annotations

from core.local.sqlite._connection import SqliteDatabase
from core.ports.storage import IdempotencyRecord, IdempotencyStore


class SqliteIdempotencyStore(SqliteDatabase, IdempotencyStore):
    def put_idempotency(self, record: IdempotencyRecord, *, now_s: int) -> IdempotencyRecord | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT key, body_hash, task_id, expires_at FROM idempotency WHERE key = ?",
                (record.key,),
            ).fetchone()
            if row is not None and row["expires_at"] > now_s:
                return IdempotencyRecord(*row)
            conn.execute(
                "INSERT OR REPLACE INTO idempotency (key, body_hash, task_id, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (record.key, record.body_hash, record.task_id, record.expires_at),
            )
        return None

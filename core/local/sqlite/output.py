"""A task's streamed output in SQLite: one `task_output` row per chunk (schema version 4),
written in the same IMMEDIATE transaction as its count on the task."""

from __future__ import annotations

import msgspec

from core.domain.models import OutputChunk, Task
from core.errors import StaleWriteError
from core.local.sqlite._connection import SqliteDatabase
from core.local.sqlite._rows import from_row
from core.ports.storage import OutputStore


class SqliteOutputStore(SqliteDatabase, OutputStore):
    def append_output(self, task: Task, chunk: OutputChunk, size: int) -> Task:
        with self._transaction() as conn:
            row = conn.execute(
                "UPDATE tasks SET output_chunks = output_chunks + 1, output_bytes = output_bytes + ?"
                " WHERE id = ? AND status = 'PROCESSING' AND attempts = ? AND server_id IS ?"
                " AND output_chunks = ? RETURNING *",
                (size, task.id, task.attempts, task.server_id, task.output_chunks),
            ).fetchone()
            if row is not None:
                conn.execute(
                    "INSERT INTO task_output (task_id, idx, data, attempt, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        task.id,
                        task.output_chunks,
                        msgspec.json.encode(chunk.data),
                        chunk.attempt,
                        chunk.created_at,
                        chunk.expires_at,
                    ),
                )
        if row is None:
            current = self._conn().execute("SELECT * FROM tasks WHERE id = ?", (task.id,)).fetchone()
            raise StaleWriteError(None if current is None else from_row(Task, current))
        return from_row(Task, row)

    def task_output(self, task_id: str, *, after: int = -1, limit: int = 100) -> list[OutputChunk]:
        rows = self._conn().execute(
            "SELECT task_id, idx, data, attempt, created_at, expires_at FROM task_output"
            " WHERE task_id = ? AND idx > ? ORDER BY idx LIMIT ?",
            (task_id, after, limit),
        )
        return [
            OutputChunk(
                task_id=row["task_id"],
                index=row["idx"],
                data=msgspec.json.decode(row["data"]),
                attempt=row["attempt"],
                created_at=row["created_at"],
                expires_at=row["expires_at"],
            )
            for row in rows
        ]

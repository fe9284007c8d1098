"""SQLite: a task's streamed output, one row per chunk beside the tasks table. `SqliteStore`
runs these inside its transactions; the chunk and its count on the task are one transaction."""

from __future__ import annotations

import sqlite3

import msgspec

from core.domain.models import OutputChunk, Task

SCHEMA = """
CREATE TABLE IF NOT EXISTS task_output (
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    attempt INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, idx)
);
"""


def append(conn: sqlite3.Connection, task: Task, chunk: OutputChunk, size: int) -> sqlite3.Row | None:
    """In the caller's transaction: count the chunk on the task if it is still PROCESSING on
    that attempt and server with that many chunks, and store it as the next. The task's row
    as written, or None (nothing written)."""
    row: sqlite3.Row | None = conn.execute(
        "UPDATE tasks SET output_chunks = output_chunks + 1, output_bytes = output_bytes + ?"
        " WHERE id = ? AND status = 'PROCESSING' AND attempts = ? AND server_id IS ?"
        " AND output_chunks = ? RETURNING *",
        (size, task.id, task.attempts, task.server_id, task.output_chunks),
    ).fetchone()
    if row is not None:
        conn.execute(
            "INSERT INTO task_output (task_id, idx, data, attempt, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                task.id,
                task.output_chunks,
                msgspec.json.encode(chunk.data),
                chunk.attempt,
                chunk.created_at,
                chunk.expires_at,
            ),
        )
    return row


def read(conn: sqlite3.Connection, task_id: str, after: int, limit: int) -> list[OutputChunk]:
    rows = conn.execute(
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


def purge(conn: sqlite3.Connection, now_s: int) -> None:
    """The chunks of tasks about to be purged, and any past their own expiry."""
    conn.execute(
        "DELETE FROM task_output WHERE expires_at <= ? OR task_id IN"
        " (SELECT id FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?)",
        (now_s, now_s),
    )

"""Tasks in SQLite, read through the indexes of the schema (owner, newest first overall and
per status, PENDING by priority then age, PROCESSING by deadline and by server). The scheduler's
reads (owner queues, PENDING counts, queue timeouts due) are in queues.py."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from core.domain.models import Task, TaskStatus
from core.local.sqlite._connection import SqliteDatabase
from core.local.sqlite._rows import from_row
from core.ports.storage import TaskPage, TaskStore, position


class SqliteTaskQueries(SqliteDatabase, TaskStore):
    def _tasks(self, sql: str, params: Collection[Any]) -> list[Task]:
        return [from_row(Task, row) for row in self._conn().execute(sql, tuple(params))]

    def tasks_by_owner(self, owner: str, limit: int = 50) -> list[Task]:
        return self._tasks(
            "SELECT * FROM tasks WHERE owner = ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (owner, limit),
        )

    def list_tasks(
        self,
        limit: int,
        *,
        status: TaskStatus | None = None,
        owner: str | None = None,
        before: str | None = None,
    ) -> TaskPage:
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if before is not None:
            created_at, _, task_id = before.partition("#")
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [int(created_at), int(created_at), task_id]
        sql = "SELECT * FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        found = self._tasks(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit + 1])
        page = found[:limit]
        return TaskPage(page, position(page[-1]) if len(found) > limit else None)

    def processing_due(self, before: int, limit: int) -> list[Task]:
        return self._tasks(
            "SELECT * FROM tasks WHERE status = 'PROCESSING' AND deadline <= ? ORDER BY deadline, id LIMIT ?",
            (before, limit),
        )

    def processing_on_server(self, server_id: str, limit: int = 1000) -> list[Task]:
        return self._tasks(
            "SELECT * FROM tasks WHERE status = 'PROCESSING' AND server_id = ? ORDER BY id LIMIT ?",
            (server_id, limit),
        )

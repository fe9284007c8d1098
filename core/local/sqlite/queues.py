"""The scheduling index on SQLite (core/domain/scheduling.py, docs/SCHEDULING.md); its tables,
triggers and indexes are schema step 5 (core/local/sqlite/_schema.py).

- `tasks.queue` is the task's capability set as a queue key (set once, at insert).
- `owner_queues` counts the PENDING tasks of each (queue, priority, owner) and keeps the
  position of its first task (so a choice reads only the chosen queue's tasks), and
  `owners_in_flight` the PROCESSING tasks of each owner. Triggers on `tasks` keep both, so they
  change in the same statement (and transaction) as the task: a claim, a release, a cancel or a
  crash can never leave them wrong.
- `tasks_owner_queue` is each owner queue's FIFO (ready_at = MAX(queued_at, not_before), id);
  `tasks_pending_age` the PENDING tasks by queued_at (queue timeouts read only what is due).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from core.domain.models import Task
from core.domain.scheduling import OwnerQueue, queue_capabilities, queue_key
from core.local.sqlite._connection import SqliteDatabase
from core.local.sqlite._rows import from_row
from core.ports.storage import SchedulingStore, TaskStore, capability_set

_FIFO = "MAX(queued_at, not_before)"


def owner_in_flight(conn: sqlite3.Connection, owner: str) -> int:
    """The owner's tasks in flight as `conn` sees them (inside a claim's transaction: exact)."""
    row = conn.execute("SELECT processing FROM owners_in_flight WHERE owner = ?", (owner,)).fetchone()
    return 0 if row is None else int(row[0])


class SqliteSchedulingStore(SqliteDatabase, TaskStore, SchedulingStore):
    def _queue_tasks(self, sql: str, params: Collection[Any]) -> list[Task]:
        return [from_row(Task, row) for row in self._conn().execute(sql, tuple(params))]

    def owner_queues(self) -> list[OwnerQueue]:
        rows = self._conn().execute(
            "SELECT queue, priority, owner, pending, head_ready, head_id FROM owner_queues WHERE pending > 0"
        )
        return [
            OwnerQueue(
                queue, int(priority), owner, int(pending), None if head_id is None else (int(ready), head_id)
            )
            for queue, priority, owner, pending, ready, head_id in rows
        ]

    def queue_tasks(
        self, owner_queue: OwnerQueue, limit: int, *, after: tuple[int, str] | None = None
    ) -> list[Task]:
        sql = (
            "SELECT * FROM tasks INDEXED BY tasks_owner_queue WHERE status = 'PENDING'"
            " AND queue = ? AND priority = ? AND owner = ?"
        )
        params: list[Any] = [owner_queue.queue, owner_queue.priority, owner_queue.owner]
        if after is not None:
            sql += f" AND ({_FIFO} > ? OR ({_FIFO} = ? AND id > ?))"
            params += [after[0], after[0], after[1]]
        sql += f" ORDER BY {_FIFO}, id LIMIT ?"
        params.append(limit)
        return self._queue_tasks(sql, params)

    def queue_ahead(self, task: Task) -> int:
        ready = max(task.queued_at, task.not_before)
        row = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM tasks INDEXED BY tasks_owner_queue WHERE status = 'PENDING'"
                f" AND queue = ? AND priority = ? AND owner = ? AND ({_FIFO} < ? OR ({_FIFO} = ? AND id < ?))",
                (queue_key(task.capabilities), task.priority, task.owner, ready, ready, task.id),
            )
            .fetchone()
        )
        return int(row[0])

    def in_flight_by_owner(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT owner, processing FROM owners_in_flight WHERE processing <> 0")
        return {owner: int(n) for owner, n in rows}

    def set_in_flight(self, owner: str, value: int, *, expected: int, quiet_since: int) -> bool:
        """Reads are consistent here: the count's own value is the whole condition."""
        with self._transaction() as conn:
            if owner_in_flight(conn, owner) != expected:
                return False
            conn.execute(
                "INSERT INTO owners_in_flight (owner, processing) VALUES (?, ?)"
                " ON CONFLICT (owner) DO UPDATE SET processing = excluded.processing",
                (owner, value),
            )
        return True

    def pending_queued_before(self, cutoff: int, limit: int) -> list[Task]:
        return self._queue_tasks(
            "SELECT * FROM tasks INDEXED BY tasks_pending_age WHERE status = 'PENDING' AND queued_at <= ?"
            " ORDER BY queued_at, id LIMIT ?",
            (cutoff, limit),
        )

    def pending_by_priority(self) -> dict[int, int]:
        rows = self._conn().execute(
            "SELECT priority, SUM(pending) FROM owner_queues GROUP BY priority HAVING SUM(pending) > 0"
        )
        return {int(priority): int(count) for priority, count in rows}

    def pending_by_need(self) -> dict[tuple[int, tuple[str, ...]], int]:
        """The owner queues' counts summed per priority and capability set (not the backlog)."""
        rows = self._conn().execute(
            "SELECT priority, queue, SUM(pending) FROM owner_queues GROUP BY priority, queue"
            " HAVING SUM(pending) > 0"
        )
        return {
            (int(priority), capability_set(queue_capabilities(queue))): int(count)
            for priority, queue, count in rows
        }

    def count_pending(self) -> int:
        row = self._conn().execute("SELECT COALESCE(SUM(pending), 0) FROM owner_queues").fetchone()
        return int(row[0])

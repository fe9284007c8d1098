"""Tasks in SQLite, written: each transition one conditional UPDATE; claim and release
change the task and its server's slot count in one IMMEDIATE transaction."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from core.domain.models import Server, Task, TaskStatus, WebhookDelivery
from core.domain.scheduling import queue_key
from core.errors import NoCapacityError, OwnerLimitError, StaleWriteError
from core.local.sqlite._connection import SqliteDatabase
from core.local.sqlite._rows import SERVER_COLUMNS, column_value, from_row, set_clause, started_bound
from core.local.sqlite.queues import owner_in_flight
from core.ports.storage import TaskStore, update_sources


class SqliteTaskWrites(SqliteDatabase, TaskStore):
    def put_task(self, task: Task) -> None:
        self._insert("tasks", Task, task, queue=queue_key(task.capabilities))

    def get_task(self, task_id: str) -> Task | None:
        row = self._conn().execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else from_row(Task, row)

    def update_task(
        self,
        task_id: str,
        changes: Mapping[str, Any],
        *,
        from_status: Collection[TaskStatus],
        attempts: int | None = None,
        server_id: str | None = None,
        retries: int | None = None,
        delivery: WebhookDelivery | None = None,
    ) -> Task:
        clause, params = set_clause(Task, changes)
        statuses = [s.value for s in update_sources(from_status, changes)]
        if not statuses:
            raise StaleWriteError(self.get_task(task_id))
        where = f"id = ? AND status IN ({', '.join('?' * len(statuses))})"
        params += [task_id, *statuses]
        if attempts is not None:
            where += " AND attempts = ?"
            params.append(attempts)
        if server_id is not None:
            where += " AND server_id = ?"
            params.append(server_id)
        if retries is not None:
            where += " AND retries = ?"
            params.append(retries)
        sql = f"UPDATE tasks SET {clause} WHERE {where} RETURNING *"
        if delivery is None:
            row = self._conn().execute(sql, params).fetchone()
        else:
            with self._transaction() as conn:
                row = conn.execute(sql, params).fetchone()
                if row is not None:
                    self._put_delivery(conn, delivery)
        if row is None:
            raise StaleWriteError(self.get_task(task_id))
        return from_row(Task, row)

    def claim_task(self, task: Task, changes: Mapping[str, Any], *, owner_limit: int = 0) -> Task:
        server_id = changes["server_id"]
        clause, params = set_clause(Task, changes)
        try:
            self._claim(task, server_id, changes.get("updated_at"), clause, params, owner_limit)
        except StaleWriteError:
            raise StaleWriteError(self.get_task(task.id)) from None
        return msgspec.structs.replace(task, **changes)

    def _claim(
        self,
        task: Task,
        server_id: str,
        claimed_at: int | None,
        clause: str,
        params: list[Any],
        owner_limit: int,
    ) -> None:
        with self._transaction() as conn:
            # Read inside the write transaction: no other claim can come in between.
            if owner_limit > 0 and owner_in_flight(conn, task.owner) >= owner_limit:
                raise OwnerLimitError(task.owner)
            taken = conn.execute(
                "UPDATE servers SET active_tasks = active_tasks + 1, last_claim_at = ?"
                " WHERE id = ? AND status = 'online' AND active_tasks < max_concurrent",
                (claimed_at, server_id),
            ).rowcount
            if not taken:
                raise NoCapacityError(server_id)
            claimed = conn.execute(
                f"UPDATE tasks SET {clause} WHERE id = ? AND status = 'PENDING' AND attempts = ?",
                [*params, task.id, task.attempts],
            ).rowcount
            if not claimed:
                raise StaleWriteError(None)

    def release_task(
        self,
        task: Task,
        changes: Mapping[str, Any],
        *,
        server_counters: Mapping[str, int] | None = None,
        server_values: Mapping[str, Any] | None = None,
        delivery: WebhookDelivery | None = None,
    ) -> Task:
        clause, params = set_clause(Task, changes)
        counters = dict(server_counters or {})
        fixed = dict(server_values or {})
        unknown = (set(counters) | set(fixed)) - set(SERVER_COLUMNS)
        if unknown or {"active_tasks", "version", "id"} & (counters.keys() | fixed.keys()):
            raise ValueError(f"not server counters or values: {sorted(counters)}, {sorted(fixed)}")
        bumps = "".join(f", {name} = {name} + ?" for name in counters)
        bumps += "".join(f", {name} = ?" for name in fixed)
        fixed_values = [column_value(Server, name, value) for name, value in fixed.items()]
        try:
            with self._transaction() as conn:
                released = conn.execute(
                    f"UPDATE tasks SET {clause} WHERE id = ? AND status = 'PROCESSING'"
                    " AND attempts = ? AND server_id = ?",
                    [*params, task.id, task.attempts, task.server_id],
                ).rowcount
                if not released:
                    raise StaleWriteError(None)
                # Not a registration made under the same id after the task started.
                conn.execute(
                    f"UPDATE servers SET active_tasks = active_tasks - 1{bumps}"
                    " WHERE id = ? AND active_tasks > 0 AND registered_at <= ?",
                    [*counters.values(), *fixed_values, task.server_id, started_bound(task)],
                )
                if delivery is not None:
                    self._put_delivery(conn, delivery)
        except StaleWriteError:
            raise StaleWriteError(self.get_task(task.id)) from None
        return msgspec.structs.replace(task, **changes)

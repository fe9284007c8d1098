"""SQLite adapter for one machine: a WAL database file, one connection per thread.

WAL with synchronous=NORMAL keeps every committed transaction across a process crash
(`kill -9`); only an OS crash or power cut can lose the last commits. Conditional writes are
`UPDATE ... WHERE <condition> RETURNING *`; the two writes that must go together (a task
entering or leaving PROCESSING and its server's slot count) share one IMMEDIATE transaction.

Indexes mirror the DynamoDB adapter's access patterns: owner, newest first overall and per
status, PENDING by priority then age, PROCESSING by deadline and by server, expiry.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from types import EllipsisType
from typing import Any, TypeVar

import msgspec

from core.domain.models import (
    DeliveryState,
    OutputChunk,
    Server,
    ServerStatus,
    Task,
    TaskStatus,
    WebhookDelivery,
)
from core.errors import NoCapacityError, StaleWriteError
from core.local import sqlite_output
from core.ports.storage import CLOCK_SKEW_MS, IdempotencyRecord, Store, TaskPage, position, update_sources

S = TypeVar("S", Task, Server, WebhookDelivery)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL,
    capabilities BLOB NOT NULL,
    is_async INTEGER NOT NULL,
    timeout_ms INTEGER,
    webhook TEXT,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL,
    message TEXT,
    server_id TEXT,
    previous_server_id TEXT,
    result BLOB,
    error BLOB,
    attempts INTEGER NOT NULL,
    attempt_limit INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    queued_at INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    deadline INTEGER,
    expires_at INTEGER,
    history BLOB,
    output_chunks INTEGER NOT NULL DEFAULT 0,
    output_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_by_owner ON tasks (owner, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_recent ON tasks (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_pending ON tasks (priority DESC, queued_at, id)
    WHERE status = 'PENDING';
CREATE INDEX IF NOT EXISTS tasks_processing_deadline ON tasks (deadline, id)
    WHERE status = 'PROCESSING';
CREATE INDEX IF NOT EXISTS tasks_processing_server ON tasks (server_id, id)
    WHERE status = 'PROCESSING';
CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS servers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    endpoints BLOB NOT NULL,
    api_key TEXT,
    max_concurrent INTEGER NOT NULL,
    capabilities BLOB NOT NULL,
    groups BLOB NOT NULL,
    priority INTEGER NOT NULL,
    status TEXT NOT NULL,
    maintenance_reason TEXT,
    registered_at INTEGER NOT NULL,
    health_status TEXT,
    last_heartbeat INTEGER,
    last_check_at INTEGER,
    last_healthy_at INTEGER,
    consecutive_failures INTEGER NOT NULL,
    consecutive_successes INTEGER NOT NULL,
    reported BLOB NOT NULL,
    active_tasks INTEGER NOT NULL,
    last_claim_at INTEGER,
    latency_ewma_ms INTEGER,
    tasks_processed INTEGER NOT NULL,
    success_count INTEGER NOT NULL,
    failure_count INTEGER NOT NULL,
    processing_ms_total INTEGER NOT NULL,
    version INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sequences (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (key, name)
);
CREATE INDEX IF NOT EXISTS counters_expiry ON counters (expires_at);
CREATE TABLE IF NOT EXISTS counter_batches (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rate_windows (
    key TEXT PRIMARY KEY, hits INTEGER NOT NULL, expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_windows_expiry ON rate_windows (expires_at);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    task_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    url TEXT NOT NULL,
    task_status TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    log BLOB NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (task_id, round)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_expiry ON webhook_deliveries (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, body_hash TEXT NOT NULL, task_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
"""

# Columns added to `tasks` after its first release: a database made before gets them on open.
_ADDED_TASK_COLUMNS = {
    "history": "BLOB",
    "output_chunks": "INTEGER NOT NULL DEFAULT 0",
    "output_bytes": "INTEGER NOT NULL DEFAULT 0",
}

# How long a counted batch is remembered (Store.add_counters_once).
COUNTER_BATCH_TTL_S = 2 * 86_400

# Fields stored as JSON text; the rest are plain columns.
_JSON_FIELDS: dict[type, frozenset[str]] = {
    Task: frozenset({"payload", "capabilities", "result", "error", "history"}),
    Server: frozenset({"endpoints", "capabilities", "groups", "reported"}),
    WebhookDelivery: frozenset({"log"}),
}
_TASK_COLUMNS = Task.__struct_fields__
_SERVER_COLUMNS = Server.__struct_fields__
_COLUMNS: dict[type, tuple[str, ...]] = {
    Task: _TASK_COLUMNS,
    Server: _SERVER_COLUMNS,
    WebhookDelivery: WebhookDelivery.__struct_fields__,
}


def _column_value(kind: type, name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _JSON_FIELDS[kind]:
        return msgspec.json.encode(value)
    if isinstance(value, TaskStatus | ServerStatus | DeliveryState):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value


def _from_row(kind: type[S], row: sqlite3.Row) -> S:
    values = dict(zip(row.keys(), row, strict=True))
    for name in _JSON_FIELDS[kind]:
        if values.get(name) is not None:
            values[name] = msgspec.json.decode(values[name])
        elif name in values:
            del values[name]  # the model's default (a task written before `history` existed)
    return msgspec.convert(values, kind, strict=False)


def _set_clause(kind: type, changes: Mapping[str, Any]) -> tuple[str, list[Any]]:
    columns = _COLUMNS[kind]
    unknown = set(changes) - set(columns)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
    clause = ", ".join(f"{name} = ?" for name in changes)
    return clause, [_column_value(kind, name, value) for name, value in changes.items()]


def _started_bound(task: Task) -> int:
    return 2**62 if task.started_at is None else task.started_at + CLOCK_SKEW_MS


class SqliteStore(Store):
    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        conn.executescript(SCHEMA + sqlite_output.SCHEMA)
        present = {row["name"] for row in conn.execute("PRAGMA table_info(tasks)")}
        for name, declaration in _ADDED_TASK_COLUMNS.items():
            if name not in present:
                conn.execute(f"ALTER TABLE tasks ADD COLUMN {name} {declaration}")

    # -- plumbing ------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA busy_timeout = 30000")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _insert(self, table: str, kind: type, item: msgspec.Struct) -> None:
        columns = item.__struct_fields__
        values = [_column_value(kind, name, getattr(item, name)) for name in columns]
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        try:
            self._conn().execute(sql, values)
        except sqlite3.IntegrityError:
            raise StaleWriteError(None) from None

    # -- tasks ---------------------------------------------------------------------------

    def put_task(self, task: Task) -> None:
        self._insert("tasks", Task, task)

    def get_task(self, task_id: str) -> Task | None:
        row = self._conn().execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else _from_row(Task, row)

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
        clause, params = _set_clause(Task, changes)
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
        return _from_row(Task, row)

    def claim_task(self, task: Task, changes: Mapping[str, Any]) -> Task:
        server_id = changes["server_id"]
        clause, params = _set_clause(Task, changes)
        try:
            self._claim(task, server_id, changes.get("updated_at"), clause, params)
        except StaleWriteError:
            raise StaleWriteError(self.get_task(task.id)) from None
        return msgspec.structs.replace(task, **changes)

    def _claim(
        self, task: Task, server_id: str, claimed_at: int | None, clause: str, params: list[Any]
    ) -> None:
        with self._transaction() as conn:
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
        clause, params = _set_clause(Task, changes)
        counters = dict(server_counters or {})
        fixed = dict(server_values or {})
        unknown = (set(counters) | set(fixed)) - set(_SERVER_COLUMNS)
        if unknown or {"active_tasks", "version", "id"} & (counters.keys() | fixed.keys()):
            raise ValueError(f"not server counters or values: {sorted(counters)}, {sorted(fixed)}")
        bumps = "".join(f", {name} = {name} + ?" for name in counters)
        bumps += "".join(f", {name} = ?" for name in fixed)
        fixed_values = [_column_value(Server, name, value) for name, value in fixed.items()]
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
                    [*counters.values(), *fixed_values, task.server_id, _started_bound(task)],
                )
                if delivery is not None:
                    self._put_delivery(conn, delivery)
        except StaleWriteError:
            raise StaleWriteError(self.get_task(task.id)) from None
        return msgspec.structs.replace(task, **changes)

    def _tasks(self, sql: str, params: Collection[Any]) -> list[Task]:
        return [_from_row(Task, row) for row in self._conn().execute(sql, tuple(params))]

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

    def pending_by_priority(self) -> dict[int, int]:
        rows = self._conn().execute(
            "SELECT priority, COUNT(*) FROM tasks WHERE status = 'PENDING' GROUP BY priority"
        )
        return {int(priority): int(count) for priority, count in rows}

    def pending_tasks(self, limit: int, *, priority: int | None = None) -> list[Task]:
        if priority is None:
            return self._tasks(
                "SELECT * FROM tasks WHERE status = 'PENDING' ORDER BY priority DESC, queued_at, id LIMIT ?",
                (limit,),
            )
        return self._tasks(
            "SELECT * FROM tasks WHERE status = 'PENDING' AND priority = ?"
            " ORDER BY priority DESC, queued_at, id LIMIT ?",
            (priority, limit),
        )

    def count_pending(self) -> int:
        row = self._conn().execute("SELECT COUNT(*) FROM tasks WHERE status = 'PENDING'").fetchone()
        return int(row[0])

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

    # -- streamed output -----------------------------------------------------------------

    def append_output(self, task: Task, chunk: OutputChunk, size: int) -> Task:
        with self._transaction() as conn:
            row = sqlite_output.append(conn, task, chunk, size)
        if row is None:
            raise StaleWriteError(self.get_task(task.id))
        return _from_row(Task, row)

    def task_output(self, task_id: str, *, after: int = -1, limit: int = 100) -> list[OutputChunk]:
        return sqlite_output.read(self._conn(), task_id, after, limit)

    # -- servers -------------------------------------------------------------------------

    def put_server(self, server: Server) -> None:
        self._insert("servers", Server, server)

    def get_server(self, server_id: str) -> Server | None:
        row = self._conn().execute("SELECT * FROM servers WHERE id = ?", (server_id,)).fetchone()
        return None if row is None else _from_row(Server, row)

    def list_servers(self) -> list[Server]:
        rows = self._conn().execute("SELECT * FROM servers ORDER BY id")
        return [_from_row(Server, row) for row in rows]

    def update_server(self, server_id: str, changes: Mapping[str, Any], *, version: int) -> Server:
        if "active_tasks" in changes or "version" in changes:
            raise ValueError("update_server never changes active_tasks or version")
        clause, params = _set_clause(Server, changes)
        row = (
            self._conn()
            .execute(
                f"UPDATE servers SET {clause}{', ' if clause else ''}version = version + 1"
                " WHERE id = ? AND version = ? RETURNING *",
                [*params, server_id, version],
            )
            .fetchone()
        )
        if row is None:
            raise StaleWriteError(self.get_server(server_id))
        return _from_row(Server, row)

    def delete_server(self, server_id: str) -> Server | None:
        row = self._conn().execute("DELETE FROM servers WHERE id = ? RETURNING *", (server_id,)).fetchone()
        return None if row is None else _from_row(Server, row)

    def set_active_tasks(
        self, server_id: str, value: int, *, expected: int, last_claim_at: int | EllipsisType | None = ...
    ) -> bool:
        query = "UPDATE servers SET active_tasks = ? WHERE id = ? AND active_tasks = ?"
        params: list[Any] = [value, server_id, expected]
        if last_claim_at is not ...:
            query += " AND last_claim_at IS ?"
            params.append(last_claim_at)
        return self._conn().execute(query, params).rowcount == 1

    # -- settings, counters, rate windows, idempotency -----------------------------------

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

    # -- webhook deliveries --------------------------------------------------------------

    def put_delivery(self, delivery: WebhookDelivery) -> None:
        self._insert("webhook_deliveries", WebhookDelivery, delivery)

    def _put_delivery(self, conn: sqlite3.Connection, delivery: WebhookDelivery) -> None:
        """Inside a task's transition: a delivery of that round already there stays as it is."""
        columns = WebhookDelivery.__struct_fields__
        values = [_column_value(WebhookDelivery, name, getattr(delivery, name)) for name in columns]
        conn.execute(
            f"INSERT OR IGNORE INTO webhook_deliveries ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})",
            values,
        )

    def deliveries_of_task(self, task_id: str) -> list[WebhookDelivery]:
        rows = self._conn().execute(
            "SELECT * FROM webhook_deliveries WHERE task_id = ? ORDER BY round", (task_id,)
        )
        return [_from_row(WebhookDelivery, row) for row in rows]

    def due_deliveries(self, now: int, limit: int) -> list[WebhookDelivery]:
        rows = self._conn().execute(
            "SELECT * FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, task_id, round LIMIT ?",
            (now, limit),
        )
        return [_from_row(WebhookDelivery, row) for row in rows]

    def update_delivery(
        self, delivery: WebhookDelivery, changes: Mapping[str, Any], *, due_by: int | None = None
    ) -> WebhookDelivery:
        if {"task_id", "round"} & changes.keys():
            raise ValueError("a delivery's task and round never change")
        clause, params = _set_clause(WebhookDelivery, changes)
        where = "task_id = ? AND round = ? AND state = 'pending' AND attempts = ?"
        params += [delivery.task_id, delivery.round, delivery.attempts]
        if due_by is not None:
            where += " AND next_attempt_at <= ?"
            params.append(due_by)
        row = (
            self._conn()
            .execute(f"UPDATE webhook_deliveries SET {clause} WHERE {where} RETURNING *", params)
            .fetchone()
        )
        if row is None:
            current = [d for d in self.deliveries_of_task(delivery.task_id) if d.round == delivery.round]
            raise StaleWriteError(current[0] if current else None)
        return _from_row(WebhookDelivery, row)

    def purge_expired(self, now_s: int) -> int:
        with self._transaction() as conn:
            sqlite_output.purge(conn, now_s)  # before the tasks: a task's output goes with it
            purged = conn.execute(
                "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?", (now_s,)
            ).rowcount
            conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now_s,))
            conn.execute("DELETE FROM rate_windows WHERE expires_at <= ?", (now_s,))
            conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now_s,))
            conn.execute(
                "DELETE FROM webhook_deliveries WHERE expires_at IS NOT NULL AND expires_at <= ?", (now_s,)
            )
        return purged

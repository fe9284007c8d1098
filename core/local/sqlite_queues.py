"""The scheduling index on SQLite (see core/domain/scheduling.py and docs/SCHEDULING.md).

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
from typing import Any

from core.domain.models import Task
from core.domain.scheduling import OwnerQueue, queue_key

QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS owner_queues (
    queue TEXT NOT NULL, priority INTEGER NOT NULL, owner TEXT NOT NULL, pending INTEGER NOT NULL,
    head_ready INTEGER, head_id TEXT,
    PRIMARY KEY (queue, priority, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners_in_flight (
    owner TEXT PRIMARY KEY, processing INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_owner_queue
    ON tasks (queue, priority, owner, MAX(queued_at, not_before), id) WHERE status = 'PENDING';
CREATE INDEX IF NOT EXISTS tasks_pending_age ON tasks (queued_at, id) WHERE status = 'PENDING';

CREATE TRIGGER IF NOT EXISTS tasks_enter_pending_insert AFTER INSERT ON tasks
WHEN NEW.status = 'PENDING' BEGIN
    INSERT INTO owner_queues (queue, priority, owner, pending)
    VALUES (NEW.queue, NEW.priority, NEW.owner, 1)
    ON CONFLICT (queue, priority, owner) DO UPDATE SET pending = pending + 1;
    UPDATE owner_queues SET head_ready = MAX(NEW.queued_at, NEW.not_before), head_id = NEW.id
    WHERE queue = NEW.queue AND priority = NEW.priority AND owner = NEW.owner
      AND (head_id IS NULL OR MAX(NEW.queued_at, NEW.not_before) < head_ready
           OR (MAX(NEW.queued_at, NEW.not_before) = head_ready AND NEW.id < head_id));
END;
CREATE TRIGGER IF NOT EXISTS tasks_enter_pending AFTER UPDATE OF status ON tasks
WHEN NEW.status = 'PENDING' AND OLD.status <> 'PENDING' BEGIN
    INSERT INTO owner_queues (queue, priority, owner, pending)
    VALUES (NEW.queue, NEW.priority, NEW.owner, 1)
    ON CONFLICT (queue, priority, owner) DO UPDATE SET pending = pending + 1;
    UPDATE owner_queues SET head_ready = MAX(NEW.queued_at, NEW.not_before), head_id = NEW.id
    WHERE queue = NEW.queue AND priority = NEW.priority AND owner = NEW.owner
      AND (head_id IS NULL OR MAX(NEW.queued_at, NEW.not_before) < head_ready
           OR (MAX(NEW.queued_at, NEW.not_before) = head_ready AND NEW.id < head_id));
END;
CREATE TRIGGER IF NOT EXISTS tasks_leave_pending AFTER UPDATE OF status ON tasks
WHEN OLD.status = 'PENDING' AND NEW.status <> 'PENDING' BEGIN
    UPDATE owner_queues SET pending = pending - 1
    WHERE queue = OLD.queue AND priority = OLD.priority AND owner = OLD.owner;
    UPDATE owner_queues SET (head_ready, head_id) = (
        SELECT MAX(queued_at, not_before), id FROM tasks INDEXED BY tasks_owner_queue
        WHERE status = 'PENDING' AND queue = OLD.queue AND priority = OLD.priority AND owner = OLD.owner
        ORDER BY MAX(queued_at, not_before), id LIMIT 1)
    WHERE queue = OLD.queue AND priority = OLD.priority AND owner = OLD.owner AND head_id = OLD.id;
    DELETE FROM owner_queues
    WHERE queue = OLD.queue AND priority = OLD.priority AND owner = OLD.owner AND pending <= 0;
END;
CREATE TRIGGER IF NOT EXISTS tasks_delete_pending AFTER DELETE ON tasks
WHEN OLD.status = 'PENDING' BEGIN
    UPDATE owner_queues SET pending = pending - 1
    WHERE queue = OLD.queue AND priority = OLD.priority AND owner = OLD.owner;
    UPDATE owner_queues SET (head_ready, head_id) = (
        SELECT MAX(queued_at, not_before), id FROM tasks INDEXED BY tasks_owner_queue
        WHERE status = 'PENDING' AND queue = OLD.queue AND priority = OLD.priority AND owner = OLD.owner
        ORDER BY MAX(queued_at, not_before), id LIMIT 1)
    WHERE queue = OLD.queue AND priority = OLD.priority AND owner = OLD.owner AND head_id = OLD.id;
    DELETE FROM owner_queues
    WHERE queue = OLD.queue AND priority = OLD.priority AND owner = OLD.owner AND pending <= 0;
END;
CREATE TRIGGER IF NOT EXISTS tasks_enter_processing AFTER UPDATE OF status ON tasks
WHEN NEW.status = 'PROCESSING' AND OLD.status <> 'PROCESSING' BEGIN
    INSERT INTO owners_in_flight (owner, processing) VALUES (NEW.owner, 1)
    ON CONFLICT (owner) DO UPDATE SET processing = processing + 1;
END;
CREATE TRIGGER IF NOT EXISTS tasks_leave_processing AFTER UPDATE OF status ON tasks
WHEN OLD.status = 'PROCESSING' AND NEW.status <> 'PROCESSING' BEGIN
    UPDATE owners_in_flight SET processing = processing - 1 WHERE owner = OLD.owner;
    DELETE FROM owners_in_flight WHERE owner = OLD.owner AND processing <= 0;
END;
CREATE TRIGGER IF NOT EXISTS tasks_delete_processing AFTER DELETE ON tasks
WHEN OLD.status = 'PROCESSING' BEGIN
    UPDATE owners_in_flight SET processing = processing - 1 WHERE owner = OLD.owner;
    DELETE FROM owners_in_flight WHERE owner = OLD.owner AND processing <= 0;
END;
"""

_REBUILD = """
DELETE FROM owner_queues;
DELETE FROM owners_in_flight;
INSERT INTO owner_queues (queue, priority, owner, pending)
    SELECT queue, priority, owner, COUNT(*) FROM tasks WHERE status = 'PENDING'
    GROUP BY queue, priority, owner;
UPDATE owner_queues SET (head_ready, head_id) = (
    SELECT MAX(t.queued_at, t.not_before), t.id FROM tasks AS t INDEXED BY tasks_owner_queue
    WHERE t.status = 'PENDING' AND t.queue = owner_queues.queue AND t.priority = owner_queues.priority
      AND t.owner = owner_queues.owner
    ORDER BY MAX(t.queued_at, t.not_before), t.id LIMIT 1);
INSERT INTO owners_in_flight (owner, processing)
    SELECT owner, COUNT(*) FROM tasks WHERE status = 'PROCESSING' GROUP BY owner;
"""

_FIFO = "MAX(queued_at, not_before)"


def open_queue_index(conn: sqlite3.Connection) -> None:
    """Create the index on a database file; one made before it gets its `queue` column and
    counts built from the tasks it holds."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    had_counts = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'owner_queues'"
    ).fetchone()
    conn.execute("BEGIN IMMEDIATE")
    try:
        if "queue" not in columns:
            conn.execute("ALTER TABLE tasks ADD COLUMN queue TEXT NOT NULL DEFAULT ''")
            rows = conn.execute("SELECT id, capabilities FROM tasks").fetchall()
            conn.executemany(
                "UPDATE tasks SET queue = ? WHERE id = ?",
                [(queue_key(_labels(caps)), task_id) for task_id, caps in rows],
            )
        for statement in _statements(QUEUE_SCHEMA):
            conn.execute(statement)
        if not had_counts:
            for statement in _statements(_REBUILD):
                conn.execute(statement)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _labels(raw: Any) -> list[str]:
    import msgspec

    return list(msgspec.json.decode(raw)) if raw else []


def _statements(script: str) -> list[str]:
    """Split a script of CREATE/INSERT/DELETE statements (a trigger body's `;` included)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.endswith("END;")):
            statements.append(text)
            current = []
    return statements


def owner_queues(conn: sqlite3.Connection) -> list[OwnerQueue]:
    rows = conn.execute(
        "SELECT queue, priority, owner, pending, head_ready, head_id FROM owner_queues WHERE pending > 0"
    )
    return [
        OwnerQueue(
            queue, int(priority), owner, int(pending), None if head_id is None else (int(ready), head_id)
        )
        for queue, priority, owner, pending, ready, head_id in rows
    ]


def queue_tasks_query(
    owner_queue: OwnerQueue, limit: int, after: tuple[int, str] | None
) -> tuple[str, list[Any]]:
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
    return sql, params


def queue_ahead(conn: sqlite3.Connection, task: Task) -> int:
    ready = max(task.queued_at, task.not_before)
    row = conn.execute(
        "SELECT COUNT(*) FROM tasks INDEXED BY tasks_owner_queue WHERE status = 'PENDING'"
        f" AND queue = ? AND priority = ? AND owner = ? AND ({_FIFO} < ? OR ({_FIFO} = ? AND id < ?))",
        (queue_key(task.capabilities), task.priority, task.owner, ready, ready, task.id),
    ).fetchone()
    return int(row[0])


def in_flight_by_owner(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT owner, processing FROM owners_in_flight WHERE processing <> 0")
    return {owner: int(n) for owner, n in rows}


def set_in_flight(conn: sqlite3.Connection, owner: str, value: int, expected: int) -> bool:
    """Reads are consistent here: the count's own value is the whole condition."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if owner_in_flight(conn, owner) != expected:
            conn.execute("ROLLBACK")
            return False
        conn.execute(
            "INSERT INTO owners_in_flight (owner, processing) VALUES (?, ?)"
            " ON CONFLICT (owner) DO UPDATE SET processing = excluded.processing",
            (owner, value),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return True


def owner_in_flight(conn: sqlite3.Connection, owner: str) -> int:
    row = conn.execute("SELECT processing FROM owners_in_flight WHERE owner = ?", (owner,)).fetchone()
    return 0 if row is None else int(row[0])


def pending_by_priority(conn: sqlite3.Connection) -> dict[int, int]:
    rows = conn.execute(
        "SELECT priority, SUM(pending) FROM owner_queues GROUP BY priority HAVING SUM(pending) > 0"
    )
    return {int(priority): int(count) for priority, count in rows}


def count_pending(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(SUM(pending), 0) FROM owner_queues").fetchone()
    return int(row[0])

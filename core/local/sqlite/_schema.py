"""The schema of the database file, and how a file of any earlier version reaches it.

Migrations: the file's version is `PRAGMA user_version`; MIGRATIONS[i] is the step from version
i to i + 1, a tuple of SQL statements. Opening a store runs the steps the file lacks, in order,
in one IMMEDIATE transaction with the version bump, so a step applies entirely or not at all,
and two processes opening one file at once apply it once (the second waits for the lock, then
finds the file up to date). Steps are only ever appended, never edited once released: to add
a column, append `("ALTER TABLE tasks ADD COLUMN ... DEFAULT ...",)` (a NOT NULL column needs
a default, for the rows already there). A file of a later version than this code knows is
refused rather than written with an older idea of its rows.

Step 1 is the schema as it stood before versioning. Its statements are `IF NOT EXISTS`, so a
file written before then (version 0, its tables already there) takes it without a change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from core.domain.scheduling import queue_key

__all__ = ["MIGRATIONS", "SchemaVersionError", "migrate"]

_SCHEMA_1 = """
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
    expires_at INTEGER
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


def _statements(script: str) -> tuple[str, ...]:
    """The statements of a script whose only semicolons end statements (the schema's)."""
    return tuple(statement.strip() for statement in script.split(";") if statement.strip())


# Step 2: failover and outlier detection (docs/SCHEDULING.md): the servers that failed a task,
# and a server's failures in a row, ejections and slow start.
_STEP_2 = (
    "ALTER TABLE tasks ADD COLUMN failed_servers BLOB NOT NULL DEFAULT '[]'",
    "ALTER TABLE servers ADD COLUMN outlier_failures INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE servers ADD COLUMN ejections INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE servers ADD COLUMN ejected_until INTEGER",
    "ALTER TABLE servers ADD COLUMN slow_start_from INTEGER",
)

# Step 3: a server's service token is bound to its registration (docs/SECURITY.md); servers
# registered before keep "" and their id-less tokens until a rotation.
_STEP_3 = ("ALTER TABLE servers ADD COLUMN token_id TEXT NOT NULL DEFAULT ''",)

# Step 4: a task's history (one entry per attempt, JSON) and streamed output (its chunks in
# their own table, counted on the task).
_STEP_4 = """
ALTER TABLE tasks ADD COLUMN history BLOB;
ALTER TABLE tasks ADD COLUMN output_chunks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN output_bytes INTEGER NOT NULL DEFAULT 0;
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

# Step 5: the scheduler's index (docs/SCHEDULING.md, core/local/sqlite/queues.py). Each task's
# capability set as a queue key (`taskgate_queue_key`, registered by `migrate`: the domain's
# queue_key), the PENDING counts per owner queue with each queue's head, the PROCESSING counts
# per owner, the triggers that keep both in the same statement as the task, the owner queues'
# FIFO index and the PENDING-by-age index (queue timeouts). A file of an earlier version gets
# its counts built from the tasks it holds.
# A task entering PENDING (created, or moved back) counts in its owner queue and may become its
# head: one body for the insert trigger and the update trigger.
_ENTER_PENDING = """
    INSERT INTO owner_queues (queue, priority, owner, pending)
    VALUES (NEW.queue, NEW.priority, NEW.owner, 1)
    ON CONFLICT (queue, priority, owner) DO UPDATE SET pending = pending + 1;
    UPDATE owner_queues SET head_ready = MAX(NEW.queued_at, NEW.not_before), head_id = NEW.id
    WHERE queue = NEW.queue AND priority = NEW.priority AND owner = NEW.owner
      AND (head_id IS NULL OR MAX(NEW.queued_at, NEW.not_before) < head_ready
           OR (MAX(NEW.queued_at, NEW.not_before) = head_ready AND NEW.id < head_id));
END;
"""

# A task leaves its (queue, priority, owner) line: one fewer pending, the next head found
# (when it was the head), and the line gone when empty; by an update or a delete alike.
_LEAVE_PENDING = """\
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
"""

_STEP_5: tuple[str, ...] = (
    "ALTER TABLE tasks ADD COLUMN queue TEXT NOT NULL DEFAULT ''",
    "UPDATE tasks SET queue = taskgate_queue_key(capabilities)",
    """
CREATE TABLE owner_queues (
    queue TEXT NOT NULL, priority INTEGER NOT NULL, owner TEXT NOT NULL, pending INTEGER NOT NULL,
    head_ready INTEGER, head_id TEXT,
    PRIMARY KEY (queue, priority, owner)
) WITHOUT ROWID
""",
    """
CREATE TABLE owners_in_flight (
    owner TEXT PRIMARY KEY, processing INTEGER NOT NULL
) WITHOUT ROWID
""",
    """
CREATE INDEX tasks_owner_queue
    ON tasks (queue, priority, owner, MAX(queued_at, not_before), id) WHERE status = 'PENDING'
""",
    """
CREATE INDEX tasks_pending_age ON tasks (queued_at, id) WHERE status = 'PENDING'
""",
    """
CREATE TRIGGER tasks_enter_pending_insert AFTER INSERT ON tasks
WHEN NEW.status = 'PENDING' BEGIN
"""
    + _ENTER_PENDING,
    """
CREATE TRIGGER tasks_enter_pending AFTER UPDATE OF status ON tasks
WHEN NEW.status = 'PENDING' AND OLD.status <> 'PENDING' BEGIN
"""
    + _ENTER_PENDING,
    """
CREATE TRIGGER tasks_leave_pending AFTER UPDATE OF status ON tasks
WHEN OLD.status = 'PENDING' AND NEW.status <> 'PENDING' BEGIN
"""
    + _LEAVE_PENDING,
    """
CREATE TRIGGER tasks_delete_pending AFTER DELETE ON tasks
WHEN OLD.status = 'PENDING' BEGIN
"""
    + _LEAVE_PENDING,
    """
CREATE TRIGGER tasks_enter_processing AFTER UPDATE OF status ON tasks
WHEN NEW.status = 'PROCESSING' AND OLD.status <> 'PROCESSING' BEGIN
    INSERT INTO owners_in_flight (owner, processing) VALUES (NEW.owner, 1)
    ON CONFLICT (owner) DO UPDATE SET processing = processing + 1;
END;
""",
    """
CREATE TRIGGER tasks_leave_processing AFTER UPDATE OF status ON tasks
WHEN OLD.status = 'PROCESSING' AND NEW.status <> 'PROCESSING' BEGIN
    UPDATE owners_in_flight SET processing = processing - 1 WHERE owner = OLD.owner;
    DELETE FROM owners_in_flight WHERE owner = OLD.owner AND processing <= 0;
END;
""",
    """
CREATE TRIGGER tasks_delete_processing AFTER DELETE ON tasks
WHEN OLD.status = 'PROCESSING' BEGIN
    UPDATE owners_in_flight SET processing = processing - 1 WHERE owner = OLD.owner;
    DELETE FROM owners_in_flight WHERE owner = OLD.owner AND processing <= 0;
END;
""",
    """
INSERT INTO owner_queues (queue, priority, owner, pending)
    SELECT queue, priority, owner, COUNT(*) FROM tasks WHERE status = 'PENDING'
    GROUP BY queue, priority, owner
""",
    """
UPDATE owner_queues SET (head_ready, head_id) = (
    SELECT MAX(t.queued_at, t.not_before), t.id FROM tasks AS t INDEXED BY tasks_owner_queue
    WHERE t.status = 'PENDING' AND t.queue = owner_queues.queue AND t.priority = owner_queues.priority
      AND t.owner = owner_queues.owner
    ORDER BY MAX(t.queued_at, t.not_before), t.id LIMIT 1)
""",
    """
INSERT INTO owners_in_flight (owner, processing)
    SELECT owner, COUNT(*) FROM tasks WHERE status = 'PROCESSING' GROUP BY owner
""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _statements(_SCHEMA_1),
    _STEP_2,
    _STEP_3,
    _statements(_STEP_4),
    _STEP_5,
)


class SchemaVersionError(RuntimeError):
    """The file was written by a later taskgate (a schema version this code does not know)."""


def _queue_key(capabilities: bytes | str | None) -> str:
    """A stored capabilities column (JSON) as its queue key, for step 5."""
    return queue_key(msgspec.json.decode(capabilities) if capabilities else [])


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Sequence[str]] | None = None) -> int:
    """Bring the file behind `conn` (in autocommit mode) to the last version; return it."""
    steps = MIGRATIONS if migrations is None else migrations
    conn.create_function("taskgate_queue_key", 1, _queue_key, deterministic=True)
    if _version(conn) == len(steps):  # the usual open: nothing to do, no write lock taken
        return len(steps)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(conn)  # again, under the lock: another process may have migrated
        if version > len(steps):
            raise SchemaVersionError(
                f"the database is at schema version {version}; this taskgate knows {len(steps)}"
            )
        for number, step in enumerate(steps[version:], start=version + 1):
            for statement in step:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return len(steps)

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

MIGRATIONS: tuple[tuple[str, ...], ...] = (_statements(_SCHEMA_1), _STEP_2, _STEP_3, _statements(_STEP_4))


class SchemaVersionError(RuntimeError):
    """The file was written by a later taskgate (a schema version this code does not know)."""


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Sequence[str]] | None = None) -> int:
    """Bring the file behind `conn` (in autocommit mode) to the last version; return it."""
    steps = MIGRATIONS if migrations is None else migrations
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

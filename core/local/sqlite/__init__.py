"""SQLite adapter for one machine: a WAL database file, one connection per thread.

WAL with synchronous=NORMAL keeps every committed transaction across a process crash
(`kill -9`); only an OS crash or power cut can lose the last commits. Conditional writes are
`UPDATE ... WHERE <condition> RETURNING *`; the two writes that must go together (a task
entering or leaving PROCESSING and its server's slot count) share one IMMEDIATE transaction.

Indexes mirror the DynamoDB adapter's access patterns: owner, newest first overall and per
status, PENDING by priority then age, PROCESSING by deadline and by server, expiry.

One module per entity (tasks, task_queries, queues (the scheduling index), output, servers, settings,
counters, rate_windows,
idempotency, deliveries) on what they share: `_connection` (the file, per-thread connections,
transactions), `_rows` (rows as models) and `_schema` (the tables, indexes and the ordered
migrations that bring a file of any earlier version to them; see there).
"""

from __future__ import annotations

from core.local.sqlite._schema import SchemaVersionError
from core.local.sqlite.counters import SqliteCounterStore
from core.local.sqlite.deliveries import SqliteDeliveryStore
from core.local.sqlite.idempotency import SqliteIdempotencyStore
from core.local.sqlite.output import SqliteOutputStore
from core.local.sqlite.queues import SqliteSchedulingStore
from core.local.sqlite.rate_windows import SqliteRateWindowStore
from core.local.sqlite.servers import SqliteServerStore
from core.local.sqlite.settings import SqliteSettingStore
from core.local.sqlite.task_queries import SqliteTaskQueries
from core.local.sqlite.tasks import SqliteTaskWrites
from core.ports.storage import Store

__all__ = ["SchemaVersionError", "SqliteStore"]


class SqliteStore(
    SqliteTaskWrites,
    SqliteTaskQueries,
    SqliteSchedulingStore,
    SqliteOutputStore,
    SqliteServerStore,
    SqliteSettingStore,
    SqliteCounterStore,
    SqliteRateWindowStore,
    SqliteIdempotencyStore,
    SqliteDeliveryStore,
    Store,
):
    """The Store on one database file: `SqliteStore(path)` creates the file, or brings an
    existing one to the current schema."""

    def purge_expired(self, now_s: int) -> int:
        with self._transaction() as conn:
            # A task's output goes with it (and, at the latest, at its own expiry).
            conn.execute(
                "DELETE FROM task_output WHERE expires_at <= ? OR task_id IN"
                " (SELECT id FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?)",
                (now_s, now_s),
            )
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

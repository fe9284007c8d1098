"""A database holding many finished tasks, written straight through the SQLite store."""

from __future__ import annotations

from pathlib import Path

from core.domain.ids import new_task_id, now_ms
from core.domain.models import Endpoints, Server, Task, TaskStatus
from core.local.sqlite import SqliteStore

TTL_S = 7 * 86_400


def finished_tasks(store: SqliteStore, count: int, *, now: int | None = None) -> None:
    """`count` COMPLETED tasks, finished over the last hour, kept for the default TTL."""
    now = now_ms() if now is None else now
    conn = store._conn()  # one transaction: the seed is setup, not what is measured
    conn.execute("BEGIN")
    for i in range(count):
        at = now - 3_600_000 + i * 3_600_000 // max(1, count)
        store.put_task(
            Task(
                id=new_task_id(),
                owner=f"seed-{i % 50}",
                type="seed",
                priority=i % 11,
                payload={"n": i},
                status=TaskStatus.COMPLETED,
                progress=100,
                server_id=f"seed-{i % 4}",
                result={"ok": True},
                attempts=1,
                created_at=at,
                updated_at=at + 5,
                queued_at=at,
                started_at=at + 1,
                completed_at=at + 5,
                expires_at=(at + 5) // 1000 + TTL_S,
            )
        )
    conn.execute("COMMIT")


def servers(store: SqliteStore, count: int, *, now: int | None = None) -> None:
    now = now_ms() if now is None else now
    for i in range(count):
        store.put_server(
            Server(
                id=f"seed-{i}",
                name=f"seed-{i}",
                endpoints=Endpoints(predict="http://127.0.0.1:9/predict", health="http://127.0.0.1:9/health"),
                registered_at=now,
                last_check_at=now,
                last_heartbeat=now,
                last_healthy_at=now,
            )
        )


def database(path: Path, tasks: int) -> None:
    store = SqliteStore(str(path))
    try:
        finished_tasks(store, tasks)
    finally:
        store.close()

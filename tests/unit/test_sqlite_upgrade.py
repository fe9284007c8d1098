"""A SQLite file of schema version 1 (before history and streamed output) opens in this release
with its tasks readable, and a task's output goes with it when it is purged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from core.domain.models import OutputChunk, TaskStatus
from core.local.sqlite import SqliteStore
from core.local.sqlite._schema import MIGRATIONS, migrate
from tests.contract.factories import NOW, claim_changes, completed_changes, put_online_server, put_pending


def test_a_version_1_file_gets_history_and_output(tmp_path: Path) -> None:
    # GIVEN a file of schema version 1 with a task in it
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == 1
    conn.execute(
        "INSERT INTO tasks (id, owner, type, priority, payload, capabilities, is_async, status, progress,"
        " attempts, attempt_limit, retries, created_at, updated_at, queued_at, not_before)"
        " VALUES ('t-old', 'alice', 'img', 1, '{}', '[]', 1, 'PENDING', 0, 0, 3, 0, 1, 1, 1, 0)"
    )
    conn.close()

    # WHEN this release opens it
    store = SqliteStore(path)

    # THEN the old task reads with an empty history and no output, and it can run and stream
    old = store.get_task("t-old")
    assert old is not None and (old.history, old.output_chunks, old.output_bytes) == ([], 0, 0)
    server = put_online_server(store)
    claimed = store.claim_task(old, claim_changes(old, server.id))
    assert store.append_output(claimed, _chunk(claimed.id), 3).output_chunks == 1
    store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_purging_a_task_drops_its_output(tmp_path: Path) -> None:
    # GIVEN two finished tasks with output, one past its expiry
    store = SqliteStore(str(tmp_path / "t.db"))
    server = put_online_server(store)
    kept, dropped = put_pending(store), put_pending(store)
    for task, expires_at in ((kept, NOW // 1000 + 10_000), (dropped, NOW // 1000 - 1)):
        claimed = store.claim_task(task, claim_changes(task, server.id))
        claimed = store.append_output(claimed, _chunk(task.id), 3)
        store.release_task(claimed, completed_changes() | {"expires_at": expires_at})

    # WHEN the sweeper purges
    store.purge_expired(NOW // 1000)

    # THEN the expired task's chunks went with it, the other's stay
    assert store.get_task(dropped.id) is None and store.task_output(dropped.id) == []
    kept_task = store.get_task(kept.id)
    assert kept_task is not None and kept_task.status is TaskStatus.COMPLETED
    assert len(store.task_output(kept.id)) == 1
    store.close()


def _chunk(task_id: str) -> OutputChunk:
    return OutputChunk(
        task_id=task_id, index=0, data="abc", attempt=1, created_at=NOW, expires_at=NOW // 1000 + 10**6
    )

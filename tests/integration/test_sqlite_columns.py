"""Schema step 2 (failover and outlier detection): a file at version 1 opens, gains the
columns, and keeps its rows: `taskgate serve` upgraded in place must not lose its queue."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from core.local.sqlite import SqliteStore
from core.local.sqlite._schema import MIGRATIONS, migrate
from tests.contract.factories import make_server, make_task


def test_a_version_1_file_gains_the_outlier_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    # GIVEN a file at schema version 1, holding a PENDING task and a server
    path = str(tmp_path / "old.db")
    task, server = make_task(), make_server()
    old = sqlite3.connect(path, isolation_level=None)
    assert migrate(old, MIGRATIONS[:1]) == 1
    old.execute(
        "INSERT INTO tasks (id, owner, type, priority, payload, capabilities, is_async, status, progress,"
        " attempts, attempt_limit, retries, created_at, updated_at, queued_at, not_before)"
        " VALUES (?, 'alice', 't', 5, '{}', '[\"gpu\"]', 1, 'PENDING', 0, 0, 3, 0, 1, 1, 1, 0)",
        (task.id,),
    )
    old.execute(
        "INSERT INTO servers (id, name, endpoints, max_concurrent, capabilities, groups, priority, status,"
        " registered_at, consecutive_failures, consecutive_successes, reported, active_tasks,"
        " tasks_processed, success_count, failure_count, processing_ms_total, version)"
        " VALUES (?, 'n', '{\"predict\":\"http://a/p\",\"health\":\"http://a/h\"}', 4, '[]', '[]', 1,"
        " 'online', 1, 0, 0, '{}', 0, 0, 0, 0, 0, 0)",
        (server.id,),
    )
    old.close()

    # WHEN the store opens it
    store = SqliteStore(path)

    # THEN the rows read back with the new fields at their defaults, and the new fields write
    got_task, got_server = store.get_task(task.id), store.get_server(server.id)
    assert got_task is not None and got_task.failed_servers == [] and got_task.capabilities == ["gpu"]
    assert got_server is not None and (got_server.outlier_failures, got_server.ejected_until) == (0, None)
    updated = store.update_server(server.id, {"ejected_until": 99, "ejections": 1}, version=0)
    assert (updated.ejected_until, updated.ejections) == (99, 1)
    assert store.pending_by_need() == {(5, ("gpu",)): 1}
    store.close()

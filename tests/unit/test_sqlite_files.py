"""The SQLite database holds every server's apiKey: its files are readable by their owner only
(security review, finding 5), and a database from before gains the columns added since."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.domain.models import Endpoints, Server
from core.local.sqlite import SqliteStore


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the usual default: new files world-readable
    try:
        yield
    finally:
        os.umask(previous)


def undo_schema_step_5(conn: sqlite3.Connection) -> None:
    """The scheduler's index (schema step 5) taken out again, as a file of version 4 has it."""
    made = conn.execute("SELECT type, name FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    for kind, name in made:
        if kind == "trigger" or name in (
            "owner_queues",
            "owners_in_flight",
            "tasks_owner_queue",
            "tasks_pending_age",
        ):
            conn.execute(f"DROP {kind.upper()} {name}")
    conn.execute("ALTER TABLE tasks DROP COLUMN queue")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def a_server() -> Server:
    endpoints = Endpoints(predict="http://10.0.0.1/p", health="http://10.0.0.1/h")
    return Server(id="s1", name="s1", endpoints=endpoints, api_key="plaintext-key", registered_at=0)


def test_a_new_database_and_its_wal_are_0600(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "t.db"
    store = SqliteStore(str(db))
    store.put_server(a_server())  # a write: the -wal and -shm files exist now
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    assert all(f.exists() for f in files)
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    store.close()


def test_an_existing_world_readable_database_is_made_0600(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "old.db"
    db.touch(mode=0o644)
    assert mode(db) == 0o644
    SqliteStore(str(db)).close()
    assert mode(db) == 0o600


def test_a_database_from_before_service_token_ids_gains_the_column(tmp_path: Path) -> None:
    db = tmp_path / "before.db"
    store = SqliteStore(str(db))
    store.put_server(a_server())
    store.close()
    with sqlite3.connect(db) as conn:  # as a database of schema version 2, before the column
        conn.execute("ALTER TABLE servers DROP COLUMN token_id")
        undo_schema_step_5(conn)  # the scheduler's index, step 5
        # and before steps 4 (history and streamed output) and 5, which come after it
        for column in ("history", "output_chunks", "output_bytes"):
            conn.execute(f"ALTER TABLE tasks DROP COLUMN {column}")
        conn.execute("DROP TABLE task_output")
        conn.execute("PRAGMA user_version = 2")
    reopened = SqliteStore(str(db))
    server = reopened.get_server("s1")
    assert server is not None and server.token_id == ""
    reopened.update_server("s1", {"token_id": "gen-1"}, version=server.version)
    assert reopened.get_server("s1").token_id == "gen-1"  # type: ignore[union-attr]
    reopened.close()

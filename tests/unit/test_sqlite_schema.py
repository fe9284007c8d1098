"""The SQLite file's schema version: a new file, a file from before versioning, a step added
later, a step that fails, a file from a later taskgate, and files opened at once."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from core.domain.models import Task
from core.local.sqlite import SchemaVersionError, SqliteStore
from core.local.sqlite._rows import from_row
from core.local.sqlite._schema import MIGRATIONS, migrate
from tests.contract.factories import make_task

NOTE_COLUMN = (("ALTER TABLE tasks ADD COLUMN note TEXT NOT NULL DEFAULT ''",),)


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def version(path: Path) -> int:
    with connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def columns(path: Path, table: str) -> list[str]:
    with connect(path) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_a_new_file_is_at_the_last_version(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = SqliteStore(str(path))
    task = make_task()
    store.put_task(task)
    assert store.get_task(task.id) == task
    store.close()
    assert version(path) == len(MIGRATIONS)


def test_a_file_from_before_versioning_keeps_its_rows_and_is_versioned(tmp_path: Path) -> None:
    # GIVEN a file with the tables and a row, at user_version 0 (as taskgate wrote it before)
    path = tmp_path / "old.db"
    conn = connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO settings (name, value) VALUES ('lb_algorithm', '\"round_robin\"')")
    conn.close()
    assert version(path) == 0

    # WHEN a store opens it
    store = SqliteStore(str(path))

    # THEN the row is there and the file is at the last version
    assert store.get_setting("lb_algorithm") == "round_robin"
    store.close()
    assert version(path) == len(MIGRATIONS)


def test_a_step_added_later_applies_once_to_an_existing_file(tmp_path: Path) -> None:
    # GIVEN a file at the current version, with a task
    path = tmp_path / "taskgate.db"
    store = SqliteStore(str(path))
    task = make_task()
    store.put_task(task)
    store.close()
    later = (*MIGRATIONS, *NOTE_COLUMN)

    # WHEN a later version adds a column, and the file is opened again after that
    conn = connect(path)
    assert migrate(conn, later) == len(later)
    assert migrate(conn, later) == len(later)  # a second open runs nothing (ALTER would fail)
    conn.close()

    # THEN the column is there, the task has its default, and the task still reads as before
    assert "note" in columns(path, "tasks")
    assert version(path) == len(later)
    with connect(path) as check:
        assert check.execute("SELECT note FROM tasks WHERE id = ?", (task.id,)).fetchone() == ("",)
    conn = connect(path)
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task.id,)).fetchone()
    conn.close()
    assert from_row(Task, row) == task


def test_a_failing_step_changes_nothing(tmp_path: Path) -> None:
    # GIVEN a file at the current version
    path = tmp_path / "taskgate.db"
    SqliteStore(str(path)).close()
    broken = (*MIGRATIONS, ("ALTER TABLE tasks ADD COLUMN half TEXT", "ALTER TABLE nowhere ADD COLUMN x"))

    # WHEN a step fails halfway
    conn = connect(path)
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrate(conn, broken)
    conn.close()

    # THEN its first statement was rolled back with it, and the version is unchanged
    assert "half" not in columns(path, "tasks")
    assert version(path) == len(MIGRATIONS)


def test_a_file_from_a_later_taskgate_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "taskgate.db"
    SqliteStore(str(path)).close()
    with connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")

    with pytest.raises(SchemaVersionError, match="schema version"):
        SqliteStore(str(path))

    assert version(path) == len(MIGRATIONS) + 1


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    # GIVEN eight openers of one new file, released together
    path = tmp_path / "taskgate.db"
    later = (*MIGRATIONS, *NOTE_COLUMN)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_and_migrate() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        try:
            start.wait()
            migrate(conn, later)
        except BaseException as error:
            errors.append(error)
        finally:
            conn.close()

    threads = [threading.Thread(target=open_and_migrate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN none failed (a second ALTER of the same column would have), and the file is current
    assert errors == []
    assert version(path) == len(later)
    assert columns(path, "tasks").count("note") == 1

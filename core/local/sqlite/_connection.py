"""The database file: one connection per thread, IMMEDIATE transactions, inserts; each
entity's part of SqliteStore builds on it."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from core.domain.models import WebhookDelivery
from core.errors import StaleWriteError
from core.local.sqlite._rows import column_value
from core.local.sqlite._schema import migrate


def _create_private(path: str) -> None:
    """The database holds every server's apiKey: readable by its owner only (0600). SQLite
    creates the -wal and -shm files with the database file's permissions."""
    if path == ":memory:" or path.startswith("file:"):
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)  # made before this release, or under another umask


class SqliteDatabase:
    """`SqliteDatabase(path)`: opens (creating or migrating) the file at `path`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        _create_private(path)
        migrate(self._conn())

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

    def _insert(self, table: str, kind: type, item: msgspec.Struct, **extra: Any) -> None:
        """`extra`: columns the model has no field for (a task's `queue`)."""
        columns = (*item.__struct_fields__, *extra)
        values = [column_value(kind, name, getattr(item, name)) for name in item.__struct_fields__]
        values += extra.values()
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        try:
            self._conn().execute(sql, values)
        except sqlite3.IntegrityError:
            raise StaleWriteError(None) from None

    def _put_delivery(self, conn: sqlite3.Connection, delivery: WebhookDelivery) -> None:
        """Inside a task's transition: a delivery of that round already there stays as it is."""
        columns = WebhookDelivery.__struct_fields__
        values = [column_value(WebhookDelivery, name, getattr(delivery, name)) for name in columns]
        conn.execute(
            f"INSERT OR IGNORE INTO webhook_deliveries ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})",
            values,
        )

"""Servers in SQLite: registration, version-checked updates, slot reconciliation."""

from __future__ import annotations

from collections.abc import Mapping
from types import EllipsisType
from typing import Any

from core.domain.models import Server
from core.errors import StaleWriteError
from core.local.sqlite._connection import SqliteDatabase
from core.local.sqlite._rows import from_row, set_clause
from core.ports.storage import ServerStore


class SqliteServerStore(SqliteDatabase, ServerStore):
    def put_server(self, server: Server) -> None:
        self._insert("servers", Server, server)

    def get_server(self, server_id: str) -> Server | None:
        row = self._conn().execute("SELECT * FROM servers WHERE id = ?", (server_id,)).fetchone()
        return None if row is None else from_row(Server, row)

    def list_servers(self) -> list[Server]:
        rows = self._conn().execute("SELECT * FROM servers ORDER BY id")
        return [from_row(Server, row) for row in rows]

    def update_server(self, server_id: str, changes: Mapping[str, Any], *, version: int) -> Server:
        if "active_tasks" in changes or "version" in changes:
            raise ValueError("update_server never changes active_tasks or version")
        clause, params = set_clause(Server, changes)
        row = (
            self._conn()
            .execute(
                f"UPDATE servers SET {clause}{', ' if clause else ''}version = version + 1"
                " WHERE id = ? AND version = ? RETURNING *",
                [*params, server_id, version],
            )
            .fetchone()
        )
        if row is None:
            raise StaleWriteError(self.get_server(server_id))
        return from_row(Server, row)

    def delete_server(self, server_id: str) -> Server | None:
        row = self._conn().execute("DELETE FROM servers WHERE id = ? RETURNING *", (server_id,)).fetchone()
        return None if row is None else from_row(Server, row)

    def set_active_tasks(
        self, server_id: str, value: int, *, expected: int, last_claim_at: int | EllipsisType | None = ...
    ) -> bool:
        query = "UPDATE servers SET active_tasks = ? WHERE id = ? AND active_tasks = ?"
        params: list[Any] = [value, server_id, expected]
        if last_claim_at is not ...:
            query += " AND last_claim_at IS ?"
            params.append(last_claim_at)
        return self._conn().execute(query, params).rowcount == 1

"""Servers in memory: registration, version-checked updates, slot reconciliation."""

from __future__ import annotations

from collections.abc import Mapping
from types import EllipsisType
from typing import Any

from core.domain.models import Server
from core.errors import StaleWriteError
from core.local.memory._data import MemoryBase, changed, check_fields, copy
from core.ports.storage import ServerStore


class MemoryServerStore(MemoryBase, ServerStore):
    def put_server(self, server: Server) -> None:
        with self._lock:
            if server.id in self.data.servers:
                raise StaleWriteError(None)
            self.data.servers[server.id] = copy(server)

    def get_server(self, server_id: str) -> Server | None:
        with self._lock:
            return self._server(server_id)

    def _server(self, server_id: str) -> Server | None:
        server = self.data.servers.get(server_id)
        return None if server is None else copy(server)

    def list_servers(self) -> list[Server]:
        with self._lock:
            return [copy(self.data.servers[key]) for key in sorted(self.data.servers)]

    def update_server(self, server_id: str, changes: Mapping[str, Any], *, version: int) -> Server:
        check_fields(Server, changes)
        if {"active_tasks", "version", "id"} & changes.keys():
            raise ValueError("update_server never changes id, active_tasks or version")
        with self._lock:
            current = self.data.servers.get(server_id)
            if current is None or current.version != version:
                raise StaleWriteError(self._server(server_id))
            written = self.data.servers[server_id] = changed(
                Server, current, {**changes, "version": version + 1}
            )
            return copy(written)

    def delete_server(self, server_id: str) -> Server | None:
        with self._lock:
            return self.data.servers.pop(server_id, None)

    def set_active_tasks(
        self, server_id: str, value: int, *, expected: int, last_claim_at: int | EllipsisType | None = ...
    ) -> bool:
        with self._lock:
            current = self.data.servers.get(server_id)
            if current is None or current.active_tasks != expected:
                return False
            if last_claim_at is not ... and current.last_claim_at != last_claim_at:
                return False
            self.data.servers[server_id] = changed(Server, current, {"active_tasks": value})
            return True

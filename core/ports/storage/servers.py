"""Servers: registration, optimistic-lock updates, and the slot-count reconciliation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import EllipsisType
from typing import Any

from core.domain.models import Server

__all__ = ["ServerStore"]


class ServerStore(ABC):
    """What the server, fleet and health services need of servers. Slots are taken and freed
    only by TaskStore.claim_task and release_task (with the task's transition)."""

    @abstractmethod
    def put_server(self, server: Server) -> None:
        """Register a server. StaleWriteError if the id is taken."""

    @abstractmethod
    def get_server(self, server_id: str) -> Server | None: ...

    @abstractmethod
    def list_servers(self) -> list[Server]:
        """Every registered server (a fleet: tens to a few thousand), ordered by id."""

    @abstractmethod
    def update_server(self, server_id: str, changes: Mapping[str, Any], *, version: int) -> Server:
        """Apply `changes` if the server's version is `version`; bumps the version.
        Never touches the slot count. StaleWriteError(current) otherwise."""

    @abstractmethod
    def delete_server(self, server_id: str) -> Server | None:
        """Remove and return the server (None if it was not there)."""

    @abstractmethod
    def set_active_tasks(
        self, server_id: str, value: int, *, expected: int, last_claim_at: int | EllipsisType | None = ...
    ) -> bool:
        """Reconciliation only: set the slot count if it is still `expected` and, when
        `last_claim_at` is given, the server's `last_claim_at` is still that (every claim sets
        it): the count may have gone up and back down meanwhile, which `expected` alone misses."""

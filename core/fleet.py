"""A short-lived, in-process view of the fleet for dispatch decisions.

Reading every server for every dispatch would cost a query per task; the view is refreshed
at most every `ttl_ms` and kept current by this process's own claims and releases. It may be
stale: claims are conditional writes, so a stale view costs a lost race (the next candidate is
tried), never an overbooked server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgspec

from core.models import Server
from core.storage import Store


class FleetView:
    def __init__(self, store: Store, ttl_ms: int, clock: Callable[[], int]) -> None:
        self._store = store
        self._ttl_ms = ttl_ms
        self._clock = clock
        self._lock = threading.Lock()
        self._servers: dict[str, Server] = {}
        self._loaded_at: int | None = None
        self._settings: dict[str, tuple[int, Any]] = {}

    def servers(self) -> list[Server]:
        with self._lock:
            now = self._clock()
            if self._loaded_at is None or now - self._loaded_at >= self._ttl_ms:
                self._servers = {s.id: s for s in self._store.list_servers()}
                self._loaded_at = now
            return list(self._servers.values())

    def get(self, server_id: str) -> Server | None:
        self.servers()
        return self._servers.get(server_id)

    def age_ms(self) -> int:
        """How old the view is (a view never loaded counts as fresh: it will be read)."""
        loaded = self._loaded_at
        return 0 if loaded is None else self._clock() - loaded

    def setting(self, name: str) -> Any:
        """A setting (the balancing algorithm), read at most every `ttl_ms` like the fleet."""
        with self._lock:
            now = self._clock()
            cached = self._settings.get(name)
            if cached is None or now - cached[0] >= self._ttl_ms:
                cached = self._settings[name] = (now, self._store.get_setting(name))
            return cached[1]

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = None
            self._settings.clear()

    def adjust(self, server_id: str, delta: int, **values: object) -> None:
        """Apply this process's own slot change (and server values) to the view."""
        with self._lock:
            server = self._servers.get(server_id)
            if server is not None:
                active = max(0, server.active_tasks + delta)
                self._servers[server_id] = msgspec.structs.replace(server, active_tasks=active, **values)

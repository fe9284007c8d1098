"""A short-lived, in-process view of the fleet for dispatch decisions.

Reading every server for every dispatch would cost a query per task; the view is refreshed
at most every `ttl_ms` and kept current by this process's own claims and releases. It may be
stale: claims are conditional writes, so a stale view costs a lost race (the next candidate is
tried), never an overbooked server.

`order` is the dispatch decision: the capable servers of each capability requirement are
indexed (core/domain/fleet_index.py) when first asked for after a refresh, so the first server to try
comes in O(log n); the full order of the rest is only computed if that server's claim fails.

Outlier detection acts here: at each refresh a server ejected now is left out of selection and
one in its slow start offers only its share of slots (core/domain/outlier.py), so the view is
right to within `ttl_ms`. The store's claim enforces the real slot count only: the share is a
preference, not a limit a stale view could break.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any

import msgspec

from core.config import OutlierPolicy
from core.domain import balancer, outlier
from core.domain.fleet_index import CapableGroup
from core.domain.models import Server, ServerStatus, Task
from core.ports.storage import Store


class FleetView:
    def __init__(
        self, store: Store, ttl_ms: int, clock: Callable[[], int], policy: OutlierPolicy | None = None
    ) -> None:
        self._store = store
        self._ttl_ms = ttl_ms
        self._clock = clock
        self.policy = policy or OutlierPolicy()
        self._lock = threading.Lock()
        self._servers: dict[str, Server] = {}
        # Servers whose selectable slots are fewer than their own (ejected, slow start): id -> limit.
        self._limits: dict[str, int] = {}
        self._loaded_at: int | None = None
        self._settings: dict[str, tuple[int, Any]] = {}
        # Capable servers by capability requirement (the task's sorted capabilities).
        self._groups: dict[tuple[str, ...], CapableGroup] = {}

    def servers(self) -> list[Server]:
        with self._lock:
            self._refresh()
            return list(self._servers.values())

    def _refresh(self) -> None:
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= self._ttl_ms:
            self._servers = {s.id: s for s in self._store.list_servers()}
            self._limits = {}
            for server in self._servers.values():
                limit = outlier.slot_limit(server, now, self.policy)
                if limit < server.max_concurrent:
                    self._limits[server.id] = limit
            self._groups = {}
            self._loaded_at = now

    def _selectable(self, server: Server) -> Server:
        """`server` as selection sees it: its slot count cut to what outlier detection allows."""
        limit = self._limits.get(server.id)
        if limit is None:
            return server
        return msgspec.structs.replace(server, max_concurrent=limit)

    def _selectable_servers(self) -> list[Server]:
        with self._lock:
            self._refresh()
            return [self._selectable(s) for s in self._servers.values()]

    def slot_limit(self, server: Server) -> int:
        """How many of `server`'s slots selection may fill (as of the last refresh)."""
        return self._limits.get(server.id, server.max_concurrent)

    def order(
        self,
        task: Task,
        algorithm: str,
        *,
        sequence: Callable[[], int],
        rng: random.Random,
        avoid: Collection[str] = (),
        exclude: Collection[str] = (),
    ) -> Iterator[Server]:
        """The servers to try for `task`, in `balancer.order`'s order (see
        `balancer.first_choice`), leaving out `exclude`; lazily: the first costs O(log n)."""
        drawn: list[int] = []

        def once() -> int:  # the shared counter is a store write: draw it at most once
            if not drawn:
                drawn.append(sequence())
            return drawn[0]

        with self._lock:
            self._refresh()
            group = self._group(task.capabilities)
            first = balancer.first_choice(algorithm, group, sequence=once, rng=rng)
        if first is not None and first.id not in avoid and first.id not in exclude:
            yield first
            exclude = {*exclude, first.id}
        elif first is None and not drawn:
            return  # no candidate at all
        rest = [s for s in balancer.candidates(self._selectable_servers(), task) if s.id not in exclude]
        yield from balancer.order(algorithm, rest, sequence=once, rng=rng, avoid=avoid)

    def _group(self, capabilities: list[str]) -> CapableGroup:
        key = tuple(capabilities)
        group = self._groups.get(key)
        if group is None:
            wanted = frozenset(capabilities)
            group = self._groups[key] = CapableGroup(
                [
                    self._selectable(s)
                    for s in self._servers.values()
                    if s.status is ServerStatus.ONLINE and wanted.issubset(s.capabilities)
                ]
            )
        return group

    def can_run(self, capabilities: Collection[str]) -> bool:
        """Whether some online server with a free slot has all of `capabilities` (as the view
        sees it: a stale view costs a lost claim, then a refresh)."""
        with self._lock:
            self._refresh()
            return self._group(sorted(set(capabilities))).candidate_count > 0

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

    def invalidate(self, *, settings: bool = False) -> None:
        """Read the fleet again at its next use (slots freed or taken elsewhere). Settings are
        kept (they still refresh every `ttl_ms`): a drain, which invalidates the fleet every
        time, would otherwise read the algorithm at every dispatch. `settings=True` drops
        them too (this process changed one)."""
        with self._lock:
            self._loaded_at = None
            if settings:
                self._settings.clear()

    def adjust(self, server_id: str, delta: int, **values: object) -> None:
        """Apply this process's own slot change (and server values) to the view."""
        with self._lock:
            server = self._servers.get(server_id)
            if server is not None:
                active = max(0, server.active_tasks + delta)
                server = self._servers[server_id] = msgspec.structs.replace(
                    server, active_tasks=active, **values
                )
                selectable = self._selectable(server)
                for group in self._groups.values():
                    if server_id in group.position:
                        group.update(selectable)

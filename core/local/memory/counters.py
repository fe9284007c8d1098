"""Statistics counters in memory."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from core.local.memory._data import Counters, MemoryBase
from core.ports.storage import CounterStore

# How long a counted batch is remembered (CounterStore.add_counters_once), as elsewhere.
COUNTER_BATCH_TTL_S = 2 * 86_400


class MemoryCounterStore(MemoryBase, CounterStore):
    def add_counters(self, key: str, increments: Mapping[str, int], *, expires_at: int) -> None:
        with self._lock:
            self._add_counters(key, increments, expires_at)

    def add_counters_once(
        self, batch_id: str, increments: Mapping[str, Mapping[str, int]], *, expires_at: int, now_s: int
    ) -> bool:
        if not any(increments.values()):
            return True
        with self._lock:
            batches = self.data.counter_batches
            if batches.get(batch_id, now_s) > now_s:  # counted, and not yet forgotten
                return False
            batches[batch_id] = now_s + COUNTER_BATCH_TTL_S
            for key, counts in increments.items():
                self._add_counters(key, counts, expires_at)
        return True

    def get_counters(self, keys: Collection[str]) -> dict[str, dict[str, int]]:
        with self._lock:
            return {key: dict(self.data.counters[key].values) for key in keys if key in self.data.counters}

    def _add_counters(self, key: str, increments: Mapping[str, int], expires_at: int) -> None:
        if not increments:
            return
        counters = self.data.counters.setdefault(key, Counters())
        for name, amount in increments.items():
            counters.values[name] = counters.values.get(name, 0) + amount
        counters.expires_at = expires_at

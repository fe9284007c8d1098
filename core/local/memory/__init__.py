"""In-memory adapter of the Store: the third target of the contract suite (`tests/contract`),
and the store of fast service tests (no file, no emulator).

Several `MemoryStore`s may share one `MemoryData`, as processes share a database file. One
lock on the data makes each method one atomic step, so the rules of `core.ports.storage`
hold as in SQLite: transitions are compare-and-set on the task as stored, and a slot is taken
or freed in the same step as the task's move into or out of PROCESSING.

Every item goes in and out as a copy through JSON (what SQLite stores): a caller never holds
the stored object, and a value that would not survive a database round trip does not survive
here either. Lists are scans sorted as the other adapters' indexes sort: this store holds
test data, a few thousand items at most.

One module per entity, as the other adapters: tasks, their streamed output, servers, settings,
counters, rate windows, idempotency, deliveries; `_data` holds what they share.
"""

from __future__ import annotations

from core.local.memory._data import MemoryData
from core.local.memory.counters import MemoryCounterStore
from core.local.memory.deliveries import MemoryDeliveryStore
from core.local.memory.idempotency import MemoryIdempotencyStore
from core.local.memory.output import MemoryOutputStore
from core.local.memory.rate_windows import MemoryRateWindowStore
from core.local.memory.scheduling import MemorySchedulingStore
from core.local.memory.servers import MemoryServerStore
from core.local.memory.settings import MemorySettingStore
from core.local.memory.tasks import MemoryTaskStore
from core.ports.storage import Store

__all__ = ["MemoryData", "MemoryStore"]


class MemoryStore(
    MemoryTaskStore,
    MemorySchedulingStore,
    MemoryOutputStore,
    MemoryServerStore,
    MemorySettingStore,
    MemoryCounterStore,
    MemoryRateWindowStore,
    MemoryIdempotencyStore,
    MemoryDeliveryStore,
    Store,
):
    def purge_expired(self, now_s: int) -> int:
        """What SQLite's purge drops: the TTL of the other stores, run on demand."""
        data = self.data
        with self._lock:
            expired = [
                t.id for t in data.tasks.values() if t.expires_at is not None and t.expires_at <= now_s
            ]
            for task_id in expired:
                del data.tasks[task_id]
                data.output.pop(task_id, None)  # a task's output goes with it
            for task_id, chunks in list(data.output.items()):
                data.output[task_id] = [c for c in chunks if c.expires_at > now_s]
            data.counters = {k: c for k, c in data.counters.items() if c.expires_at > now_s}
            data.rate_windows = {k: w for k, w in data.rate_windows.items() if w.expires_at > now_s}
            data.idempotency = {k: r for k, r in data.idempotency.items() if r.expires_at > now_s}
            data.deliveries = {
                k: d for k, d in data.deliveries.items() if d.expires_at is None or d.expires_at > now_s
            }
        return len(expired)

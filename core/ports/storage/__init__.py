"""The storage the services need, as narrow ports named after what each service uses.

Each port is one idea (tasks, a task's streamed output, servers, settings and counters, rate
windows, idempotency, webhook deliveries); `Store` composes them, and each adapter provides one `Store`:
`core.local.sqlite.SqliteStore` (one machine), `core.aws.dynamodb.DynamoStore` (AWS) and
`core.local.memory.MemoryStore` (tests and tools). All three pass one contract suite
(`tests/contract`).

Rules every adapter keeps:
- Every task transition is a compare-and-set on the task's status (and, where given, its
  attempt number and server); a caller that loses gets StaleWriteError, never a silent win.
- A task enters or leaves PROCESSING in the same atomic write that takes or frees its slot
  on the server, so `Server.active_tasks` always equals the tasks PROCESSING there.
- No request-path method reads the whole table; every list comes from an index.
"""

from __future__ import annotations

from core.ports.storage.deliveries import DeliveryStore
from core.ports.storage.idempotency import IdempotencyRecord, IdempotencyStore
from core.ports.storage.output import OutputStore
from core.ports.storage.rate_windows import RateWindowStore
from core.ports.storage.scheduling import SchedulingStore
from core.ports.storage.servers import ServerStore
from core.ports.storage.settings import CounterStore, SettingStore
from core.ports.storage.store import Store
from core.ports.storage.tasks import (
    CLOCK_SKEW_MS,
    TaskPage,
    TaskStore,
    capability_set,
    position,
    update_sources,
)

__all__ = [
    "CLOCK_SKEW_MS",
    "CounterStore",
    "DeliveryStore",
    "IdempotencyRecord",
    "IdempotencyStore",
    "OutputStore",
    "RateWindowStore",
    "SchedulingStore",
    "ServerStore",
    "SettingStore",
    "Store",
    "TaskPage",
    "TaskStore",
    "capability_set",
    "position",
    "update_sources",
]

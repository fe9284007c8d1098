"""The whole store an adapter provides: every narrow port, and the adapter's lifecycle."""

from __future__ import annotations

from core.ports.storage.deliveries import DeliveryStore
from core.ports.storage.idempotency import IdempotencyStore
from core.ports.storage.output import OutputStore
from core.ports.storage.rate_windows import RateWindowStore
from core.ports.storage.scheduling import SchedulingStore
from core.ports.storage.servers import ServerStore
from core.ports.storage.settings import CounterStore, SettingStore
from core.ports.storage.tasks import TaskStore

__all__ = ["Store"]


class Store(
    TaskStore,
    SchedulingStore,
    OutputStore,
    ServerStore,
    SettingStore,
    CounterStore,
    RateWindowStore,
    IdempotencyStore,
    DeliveryStore,
):
    """Services that need one part take that port (`TaskStore`, ...); the Context holds this."""

    def close(self) -> None:
        """Release connections."""

    def purge_expired(self, now_s: int) -> int:
        """Drop finished tasks and windows past their expiry; stores with native TTL
        (DynamoDB) leave it to the store and return 0."""
        return 0

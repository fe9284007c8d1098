"""Per-request records in memory: rate-window hits and idempotency keys."""

from __future__ import annotations

from core.local.memory._data import MemoryBase, RateWindow
from core.ports.storage import IdempotencyRecord, IdempotencyStore, RateWindowStore


class MemoryRateWindowStore(MemoryBase, RateWindowStore):
    def hit_rate_window(self, key: str, *, expires_at: int) -> int:
        with self._lock:
            window = self.data.rate_windows.setdefault(key, RateWindow(hits=0, expires_at=expires_at))
            window.hits += 1
            return window.hits


class MemoryIdempotencyStore(MemoryBase, IdempotencyStore):
    def put_idempotency(self, record: IdempotencyRecord, *, now_s: int) -> IdempotencyRecord | None:
        with self._lock:
            existing = self.data.idempotency.get(record.key)
            if existing is not None and existing.expires_at > now_s:
                return existing
            self.data.idempotency[record.key] = record
        return None

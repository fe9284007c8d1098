"""Idempotency keys in memory."""

from __future__ import annotations

from core.local.memory._data import MemoryBase
from core.ports.storage import IdempotencyRecord, IdempotencyStore


class MemoryIdempotencyStore(MemoryBase, IdempotencyStore):
    def put_idempotency(self, record: IdempotencyRecord, *, now_s: int) -> IdempotencyRecord | None:
        with self._lock:
            existing = self.data.idempotency.get(record.key)
            if existing is not None and existing.expires_at > now_s:
                return existing
            self.data.idempotency[record.key] = record
        return None

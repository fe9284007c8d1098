"""Idempotency keys: the first request with a key claims it until it expires."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["IdempotencyRecord", "IdempotencyStore"]


@dataclass(frozen=True)
class IdempotencyRecord:
    key: str
    body_hash: str
    task_id: str
    expires_at: int  # epoch seconds


class IdempotencyStore(ABC):
    """What idempotent task creation needs."""

    @abstractmethod
    def put_idempotency(self, record: IdempotencyRecord, *, now_s: int) -> IdempotencyRecord | None:
        """Store `record` unless a record with its key that expires after `now_s` exists;
        return that record if so (and store nothing)."""

"""The data MemoryStores share, and the copying every method goes through."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from core.domain.models import OutputChunk, Server, Task, WebhookDelivery
from core.ports.storage import IdempotencyRecord

S = TypeVar("S", Task, Server, WebhookDelivery)

_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def copy(item: S) -> S:
    """A fresh copy through JSON, as a database round trip gives."""
    return msgspec.json.decode(_encoder.encode(item), type=type(item))


def changed(kind: type[S], item: S, changes: Mapping[str, Any]) -> S:
    """`item` with `changes` applied, as a fresh copy (enum values given as strings become
    enums, as a database round trip makes them). ValueError for a field `kind` lacks."""
    check_fields(kind, changes)
    return copy(msgspec.structs.replace(item, **changes))


def check_fields(kind: type[msgspec.Struct], names: Iterable[str]) -> None:
    unknown = set(names) - set(kind.__struct_fields__)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")


@dataclass
class Counters:
    values: dict[str, int] = field(default_factory=dict)
    expires_at: int = 0


@dataclass
class RateWindow:
    hits: int
    expires_at: int


@dataclass
class MemoryData:
    """What MemoryStores share (as processes share a database file). Every read and write
    holds `lock`, so each store method is one atomic step."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    tasks: dict[str, Task] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    settings: dict[str, bytes] = field(default_factory=dict)  # JSON, as SQLite keeps them
    sequences: dict[str, int] = field(default_factory=dict)
    counters: dict[str, Counters] = field(default_factory=dict)
    counter_batches: dict[str, int] = field(default_factory=dict)  # batch id -> expires_at
    rate_windows: dict[str, RateWindow] = field(default_factory=dict)
    idempotency: dict[str, IdempotencyRecord] = field(default_factory=dict)
    deliveries: dict[tuple[str, int], WebhookDelivery] = field(default_factory=dict)
    # Tasks PROCESSING per owner, changed in the same step as each claim and release.
    in_flight: dict[str, int] = field(default_factory=dict)
    output: dict[str, list[OutputChunk]] = field(default_factory=dict)  # task id -> chunks, in order


class MemoryBase:
    """What every entity's part of MemoryStore holds: the shared data and its lock."""

    def __init__(self, data: MemoryData | None = None) -> None:
        """A store on `data` (new, empty data when not given)."""
        self.data = data if data is not None else MemoryData()
        self._lock = self.data.lock

    def _put_delivery_if_new(self, delivery: WebhookDelivery) -> bool:
        """Under the lock, alone or with a task's final transition: a delivery of that round
        already there stays as it is."""
        key = (delivery.task_id, delivery.round)
        if key in self.data.deliveries:
            return False
        self.data.deliveries[key] = copy(delivery)
        return True

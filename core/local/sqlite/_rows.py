"""Rows of the SQLite tables as the models: plain columns, JSON text for nested fields."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from core.domain.models import DeliveryState, Server, ServerStatus, Task, TaskStatus, WebhookDelivery
from core.ports.storage import CLOCK_SKEW_MS

S = TypeVar("S", Task, Server, WebhookDelivery)

# Fields stored as JSON text; the rest are plain columns.
_JSON_FIELDS: dict[type, frozenset[str]] = {
    Task: frozenset({"payload", "capabilities", "failed_servers", "result", "error", "history"}),
    Server: frozenset({"endpoints", "capabilities", "groups", "reported"}),
    WebhookDelivery: frozenset({"log"}),
}
TASK_COLUMNS = Task.__struct_fields__
SERVER_COLUMNS = Server.__struct_fields__
_COLUMNS: dict[type, tuple[str, ...]] = {
    Task: TASK_COLUMNS,
    Server: SERVER_COLUMNS,
    WebhookDelivery: WebhookDelivery.__struct_fields__,
}


def column_value(kind: type, name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _JSON_FIELDS[kind]:
        return msgspec.json.encode(value)
    if isinstance(value, TaskStatus | ServerStatus | DeliveryState):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value


def from_row(kind: type[S], row: sqlite3.Row) -> S:
    values = dict(zip(row.keys(), row, strict=True))
    for name in _JSON_FIELDS[kind]:
        if values.get(name) is not None:
            values[name] = msgspec.json.decode(values[name])
        elif name in values:
            del values[name]  # the model's default (a task written before `history` existed)
    return msgspec.convert(values, kind, strict=False)


def set_clause(kind: type, changes: Mapping[str, Any]) -> tuple[str, list[Any]]:
    columns = _COLUMNS[kind]
    unknown = set(changes) - set(columns)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
    clause = ", ".join(f"{name} = ?" for name in changes)
    return clause, [column_value(kind, name, value) for name, value in changes.items()]


def started_bound(task: Task) -> int:
    return 2**62 if task.started_at is None else task.started_at + CLOCK_SKEW_MS

"""Webhook deliveries in SQLite: claimed and settled by conditional UPDATEs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.domain.models import WebhookDelivery
from core.errors import StaleWriteError
from core.local.sqlite._connection import SqliteDatabase
from core.local.sqlite._rows import from_row, set_clause
from core.ports.storage import DeliveryStore


class SqliteDeliveryStore(SqliteDatabase, DeliveryStore):
    def put_delivery(self, delivery: WebhookDelivery) -> None:
        self._insert("webhook_deliveries", WebhookDelivery, delivery)

    def deliveries_of_task(self, task_id: str) -> list[WebhookDelivery]:
        rows = self._conn().execute(
            "SELECT * FROM webhook_deliveries WHERE task_id = ? ORDER BY round", (task_id,)
        )
        return [from_row(WebhookDelivery, row) for row in rows]

    def due_deliveries(self, now: int, limit: int) -> list[WebhookDelivery]:
        rows = self._conn().execute(
            "SELECT * FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, task_id, round LIMIT ?",
            (now, limit),
        )
        return [from_row(WebhookDelivery, row) for row in rows]

    def update_delivery(
        self, delivery: WebhookDelivery, changes: Mapping[str, Any], *, due_by: int | None = None
    ) -> WebhookDelivery:
        if {"task_id", "round"} & changes.keys():
            raise ValueError("a delivery's task and round never change")
        clause, params = set_clause(WebhookDelivery, changes)
        where = "task_id = ? AND round = ? AND state = 'pending' AND attempts = ?"
        params += [delivery.task_id, delivery.round, delivery.attempts]
        if due_by is not None:
            where += " AND next_attempt_at <= ?"
            params.append(due_by)
        row = (
            self._conn()
            .execute(f"UPDATE webhook_deliveries SET {clause} WHERE {where} RETURNING *", params)
            .fetchone()
        )
        if row is None:
            current = [d for d in self.deliveries_of_task(delivery.task_id) if d.round == delivery.round]
            raise StaleWriteError(current[0] if current else None)
        return from_row(WebhookDelivery, row)

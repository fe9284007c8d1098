"""Webhook deliveries in memory: claimed and settled by compare-and-set on state and attempts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.domain.models import DeliveryState, WebhookDelivery
from core.errors import StaleWriteError
from core.local.memory._data import MemoryBase, changed, check_fields, copy
from core.ports.storage import DeliveryStore


class MemoryDeliveryStore(MemoryBase, DeliveryStore):
    def put_delivery(self, delivery: WebhookDelivery) -> None:
        with self._lock:
            if not self._put_delivery_if_new(delivery):
                raise StaleWriteError(None)

    def deliveries_of_task(self, task_id: str) -> list[WebhookDelivery]:
        with self._lock:
            found = [d for (task, _), d in self.data.deliveries.items() if task == task_id]
            return [copy(d) for d in sorted(found, key=lambda d: d.round)]

    def due_deliveries(self, now: int, limit: int) -> list[WebhookDelivery]:
        with self._lock:
            due = [
                d
                for d in self.data.deliveries.values()
                if d.state is DeliveryState.PENDING and d.next_attempt_at <= now
            ]
            due.sort(key=lambda d: (d.next_attempt_at, d.task_id, d.round))
            return [copy(d) for d in due[: max(limit, 0)]]

    def update_delivery(
        self, delivery: WebhookDelivery, changes: Mapping[str, Any], *, due_by: int | None = None
    ) -> WebhookDelivery:
        check_fields(WebhookDelivery, changes)
        if {"task_id", "round"} & changes.keys():
            raise ValueError("a delivery's task and round never change")
        key = (delivery.task_id, delivery.round)
        with self._lock:
            current = self.data.deliveries.get(key)
            if (
                current is None
                or current.state is not DeliveryState.PENDING
                or current.attempts != delivery.attempts
                or (due_by is not None and current.next_attempt_at > due_by)
            ):
                raise StaleWriteError(None if current is None else copy(current))
            written = self.data.deliveries[key] = changed(WebhookDelivery, current, changes)
            return copy(written)

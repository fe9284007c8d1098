"""Webhook deliveries: one per time a task finished, claimed and settled by compare-and-set."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from core.domain.models import WebhookDelivery

__all__ = ["DeliveryStore"]


class DeliveryStore(ABC):
    """What webhook delivery needs. A delivery is created with its task's final transition
    (TaskStore.update_task or release_task, `delivery=`) or alone by put_delivery."""

    @abstractmethod
    def put_delivery(self, delivery: WebhookDelivery) -> None:
        """Store a new delivery. StaleWriteError if one exists for that task and round."""

    @abstractmethod
    def deliveries_of_task(self, task_id: str) -> list[WebhookDelivery]:
        """Every delivery of the task, oldest round first."""

    @abstractmethod
    def due_deliveries(self, now: int, limit: int) -> list[WebhookDelivery]:
        """PENDING deliveries whose next attempt is at or before `now`, earliest first."""

    @abstractmethod
    def update_delivery(
        self, delivery: WebhookDelivery, changes: Mapping[str, Any], *, due_by: int | None = None
    ) -> WebhookDelivery:
        """Apply `changes` if the delivery is still PENDING with `delivery.attempts` (and, when
        `due_by` is given, its next attempt is at or before it). Returns it as written.
        StaleWriteError(current) otherwise: someone else claimed or settled it."""

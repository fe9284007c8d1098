"""One machine's queue: a direct call into the in-process dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from core.ports.queue import TaskQueue

if TYPE_CHECKING:
    from core.domain.models import Task


class CallbackQueue(TaskQueue):
    """One machine: the in-process dispatcher's wake-up, or nothing until it is attached."""

    def __init__(self) -> None:
        self.on_enqueue: Callable[[str, int], None] | None = None
        self.on_capacity: Callable[[], None] | None = None
        self.on_check_server: Callable[[str], None] | None = None
        self.on_webhook: Callable[[int], None] | None = None

    def enqueue(self, task_id: str, *, delay_ms: int = 0, snapshot: Task | None = None) -> None:
        if self.on_enqueue is not None:
            self.on_enqueue(task_id, delay_ms)

    def capacity_changed(self) -> None:
        if self.on_capacity is not None:
            self.on_capacity()

    def check_server(self, server_id: str) -> None:
        if self.on_check_server is not None:
            self.on_check_server(server_id)

    def webhook_due(self, task_id: str, round_: int, *, delay_ms: int = 0) -> None:
        if self.on_webhook is not None:
            self.on_webhook(delay_ms)

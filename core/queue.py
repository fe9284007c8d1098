"""How a stored task reaches the dispatcher.

The store is the source of truth (a PENDING task is queued whether or not a message
exists); the queue only wakes a dispatcher. A message that is lost is found again by the
sweeper, which re-enqueues PENDING tasks that waited too long.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable


class TaskQueue(ABC):
    @abstractmethod
    def enqueue(self, task_id: str, *, delay_ms: int = 0) -> None:
        """Ask a dispatcher to look at this task (after `delay_ms`)."""

    def capacity_changed(self) -> None:  # noqa: B027 - optional hook
        """A slot freed or a server became available: waiting tasks may now fit."""


class CallbackQueue(TaskQueue):
    """One machine: the in-process dispatcher's wake-up, or nothing until it is attached."""

    def __init__(self) -> None:
        self.on_enqueue: Callable[[str, int], None] | None = None
        self.on_capacity: Callable[[], None] | None = None

    def enqueue(self, task_id: str, *, delay_ms: int = 0) -> None:
        if self.on_enqueue is not None:
            self.on_enqueue(task_id, delay_ms)

    def capacity_changed(self) -> None:
        if self.on_capacity is not None:
            self.on_capacity()

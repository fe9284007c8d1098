"""How a stored task reaches the dispatcher.

The store is the source of truth (a PENDING task is queued whether or not a message
exists); the queue only wakes a dispatcher. A message that is lost is found again by the
sweeper, which re-enqueues PENDING tasks that waited too long.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.domain.models import Task

log = logging.getLogger(__name__)


class TaskQueue(ABC):
    @abstractmethod
    def enqueue(self, task_id: str, *, delay_ms: int = 0, snapshot: Task | None = None) -> None:
        """Ask a dispatcher to look at this task (after `delay_ms`). `snapshot`, the task as
        just written, may travel with the message so the dispatcher need not read it: a stale
        one is harmless, since the claim is conditional on the stored task."""

    def capacity_changed(self) -> None:  # noqa: B027 - optional hook
        """A slot freed or a server became available: waiting tasks may now fit."""

    def check_server(self, server_id: str) -> None:  # noqa: B027 - optional hook
        """A server was registered: check its health now rather than at the next sweep."""

    def webhook_due(self, task_id: str, round_: int, *, delay_ms: int = 0) -> None:  # noqa: B027
        """A webhook delivery is due (after `delay_ms`); a lost hint is found by the sweep."""


def enqueue_safely(
    queue: TaskQueue, task_id: str, *, delay_ms: int = 0, snapshot: Task | None = None
) -> None:
    """Enqueue after the task is stored; a lost message is found again by the sweeper."""
    try:
        queue.enqueue(task_id, delay_ms=delay_ms, snapshot=snapshot)
    except Exception:
        log.exception("enqueue failed; the sweeper will find the task", extra={"task_id": task_id})

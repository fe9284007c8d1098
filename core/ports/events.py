"""Task changes, announced to whoever waits for them in this process.

One machine: `async: false` requests (and, later, WebSocket subscribers) are woken by the
writes themselves. In AWS each request is its own invocation, so waiting falls back to reading
the task with a growing pause (DynamoDB Streams carry changes to other consumers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from core.domain.models import Task, TaskStatus
from core.ports.storage import TaskStore

Listener = Callable[[Task, TaskStatus | None], None]


class TaskEvents:
    """Listeners called on every task write in this process (statistics, the backend's
    cancel call); waiting for a task reads the store (each AWS request is its own process)."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def publish(self, task: Task, previous: TaskStatus | None) -> None:
        """A task was written (created, dispatched, progressed, finished, requeued);
        `previous` is its status before the write (None: it was just created)."""
        for listener in self.listeners:
            listener(task, previous)

    async def wait_finished(self, store: TaskStore, task_id: str, timeout_s: float) -> Task | None:
        """The task once terminal, or as it stands when `timeout_s` runs out."""
        deadline = time.monotonic() + timeout_s
        pause = 0.05
        while True:
            task = store.get_task(task_id)
            left = deadline - time.monotonic()
            if task is None or task.status.is_terminal or left <= 0:
                return task
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)

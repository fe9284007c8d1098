"""Task changes, announced to whoever waits for them in this process.

One machine: `async: false` requests (and, later, WebSocket subscribers) are woken by the
writes themselves. In AWS each request is its own invocation, so waiting falls back to reading
the task with a growing pause (DynamoDB Streams carry changes to other consumers).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable

from core.domain.models import Task, TaskStatus
from core.ports.storage import Store

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

    async def wait_finished(self, store: Store, task_id: str, timeout_s: float) -> Task | None:
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


class LocalEvents(TaskEvents):
    """One machine: writes wake waiters directly; no polling."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: dict[str, list[asyncio.Future[Task]]] = defaultdict(list)

    def publish(self, task: Task, previous: TaskStatus | None) -> None:
        super().publish(task, previous)
        if task.status.is_terminal and task.id in self._waiters:
            for waiter in self._waiters.pop(task.id):
                if not waiter.done():
                    waiter.get_loop().call_soon_threadsafe(_resolve, waiter, task)

    async def wait_finished(self, store: Store, task_id: str, timeout_s: float) -> Task | None:
        waiter: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._waiters[task_id].append(waiter)
        try:
            # Registered before reading, so a finish between the two is not missed.
            task = store.get_task(task_id)
            if task is None or task.status.is_terminal:
                return task
            try:
                return await asyncio.wait_for(waiter, timeout_s)
            except TimeoutError:
                return store.get_task(task_id)
        finally:
            waiting = self._waiters.get(task_id)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[task_id]


def _resolve(waiter: asyncio.Future[Task], task: Task) -> None:
    if not waiter.done():
        waiter.set_result(task)

"""One machine's task events: writes wake the requests waiting on them, no polling."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from core.domain.models import Task, TaskStatus
from core.ports.events import TaskEvents
from core.ports.storage import TaskStore


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

    async def wait_finished(self, store: TaskStore, task_id: str, timeout_s: float) -> Task | None:
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

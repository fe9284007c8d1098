"""One machine's task events: writes wake the requests waiting on them, no polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from core.domain.models import OutputChunk, Task, TaskStatus
from core.ports.events import TaskEvents, Watch
from core.ports.storage import TaskStore


class LocalWatch(Watch):
    """Set by every write of its task (from any thread, through the reader's loop)."""

    def __init__(self, owner: LocalEvents, task_id: str) -> None:
        super().__init__()
        self._owner = owner
        self._task_id = task_id
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def clear(self) -> None:
        self._changed.clear()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    def close(self) -> None:
        self._owner._forget(self._task_id, self)

    def wake(self) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._changed.set()
        else:
            self._loop.call_soon_threadsafe(self._changed.set)


class LocalEvents(TaskEvents):
    """One machine: writes wake waiters directly; no polling."""

    streams_stay_open = True

    def __init__(self) -> None:
        super().__init__()
        self._waiters: dict[str, list[asyncio.Future[Task]]] = defaultdict(list)
        self._watches: dict[str, set[LocalWatch]] = defaultdict(set)

    def publish(self, task: Task, previous: TaskStatus | None) -> None:
        super().publish(task, previous)
        self._wake(task.id)
        if task.status.is_terminal and task.id in self._waiters:
            for waiter in self._waiters.pop(task.id):
                if not waiter.done():
                    waiter.get_loop().call_soon_threadsafe(_resolve, waiter, task)

    def publish_output(self, chunk: OutputChunk) -> None:
        super().publish_output(chunk)
        self._wake(chunk.task_id)

    def close(self) -> None:
        super().close()
        for watches in list(self._watches.values()):
            for watch in list(watches):
                watch.wake()

    def watch(self, task_id: str) -> Watch:
        watch = LocalWatch(self, task_id)
        self._watches[task_id].add(watch)
        return watch

    def _wake(self, task_id: str) -> None:
        for watch in list(self._watches.get(task_id, ())):
            watch.wake()

    def _forget(self, task_id: str, watch: LocalWatch) -> None:
        watches = self._watches.get(task_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[task_id]

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

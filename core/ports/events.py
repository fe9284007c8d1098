"""Task changes, announced to whoever waits for them in this process.

One machine: `async: false` requests, streams and WebSocket subscribers are woken by the
writes themselves. In AWS each request is its own invocation, so waiting falls back to reading
the task with a growing pause (DynamoDB Streams carry changes to other consumers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from core.domain.models import OutputChunk, Task, TaskStatus
from core.ports.storage import TaskStore

Listener = Callable[[Task, TaskStatus | None], None]
OutputListener = Callable[[OutputChunk], None]

# How often a watcher without in-process wake-ups looks again, at most (AWS).
_POLL_CEILING_S = 1.0


class Watch:
    """Wakes a reader of one task when it may have changed. Here: a growing pause (the write
    may come from any process); a subclass is woken by the write itself."""

    def __init__(self) -> None:
        self._pause = 0.05

    def clear(self) -> None:
        """Called before each read of the task: a change after this wakes `wait`."""

    async def wait(self, timeout_s: float) -> None:
        """Until the task may have changed, or `timeout_s` at the most."""
        await asyncio.sleep(max(0.0, min(self._pause, timeout_s)))
        self._pause = min(self._pause * 2, _POLL_CEILING_S)

    def close(self) -> None:
        """The reader is done."""


class TaskEvents:
    """Listeners called on every task write in this process (statistics, the backend's
    cancel call); waiting for a task reads the store (each AWS request is its own process)."""

    # Whether a stream can stay open until its task is done (one machine), or must answer
    # within a bounded wait and be reconnected (AWS: a Lambda answers in one piece).
    streams_stay_open = False

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.output_listeners: list[OutputListener] = []
        # The process is shutting down: readers of task streams end (their clients reconnect).
        self.closing = False

    def close(self) -> None:
        """The server stops: wake every reader so that it ends."""
        self.closing = True

    def publish(self, task: Task, previous: TaskStatus | None) -> None:
        """A task was written (created, dispatched, progressed, finished, requeued);
        `previous` is its status before the write (None: it was just created)."""
        for listener in self.listeners:
            listener(task, previous)

    def publish_output(self, chunk: OutputChunk) -> None:
        """A chunk of a running task's output was stored."""
        for listener in self.output_listeners:
            listener(chunk)

    def watch(self, task_id: str) -> Watch:
        """Something to wait on for changes of `task_id` (close it when done)."""
        return Watch()

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
            pause = min(pause * 2, _POLL_CEILING_S)

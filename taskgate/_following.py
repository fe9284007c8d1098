"""Following a task to its end with the synchronous client: polling (`wait`) or reading its
stream (`stream`, `output`, `follow`). `Client` has these methods from `Following`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from taskgate._http import Connection
from taskgate._waiting import STREAM_BROKEN, Polling, Reading, deliver
from taskgate.errors import RateLimited
from taskgate.models import Task
from taskgate.streaming import OutputEvent, TaskEvent


class Following:
    _http: Connection

    def get_task(self, task_id: str) -> Task:
        raise NotImplementedError

    def wait(
        self,
        task_id: str,
        timeout: float | None = 300.0,
        on_progress: Callable[[Task], object] | None = None,
    ) -> Task:
        """Poll the task until it is finished (COMPLETED, FAILED, TIMEOUT or CANCELLED) and
        return it; a failed task is returned, not raised. `on_progress(task)` is called with
        the first reading and whenever the status or progress changes. After `timeout`
        seconds (None: no limit) it raises `WaitTimeout`. A rate-limited poll waits out the
        limit's Retry-After when that fits in the time left."""
        polling = Polling(timeout, on_progress)
        while True:
            try:
                task = self.get_task(task_id)
            except RateLimited as exc:
                time.sleep(polling.rate_limited(exc))
                continue
            pause = polling.read(task)
            if pause is None:
                return task
            time.sleep(pause)

    def stream(
        self, task_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> Iterator[TaskEvent]:
        """The task's events as they come (`GET /api/task/:id/stream`): `StatusEvent` on each
        change, `OutputEvent` for every output chunk from the first, and a last `DoneEvent`
        with the finished task. A stream that ends early or breaks is read again from the last
        event (`Last-Event-ID`), and no chunk is yielded twice. After `timeout` seconds (None:
        no limit) it raises `WaitTimeout`."""
        reading = Reading(task_id, last_event_id, timeout)
        while True:
            try:
                with self._http.stream(*reading.request()) as lines:
                    try:
                        for line in lines:
                            yield from reading.feed(line)
                            if reading.done:
                                return
                    except STREAM_BROKEN:
                        pass  # read again from the last event
            except RateLimited as exc:
                time.sleep(reading.rate_limited(exc))
                continue
            time.sleep(reading.reconnect_s)
            if reading.up():
                raise reading.timed_out(self.get_task(task_id))

    def output(self, task_id: str, *, timeout: float | None = None) -> Iterator[Any]:
        """The task's output chunks (their data) as they come, until the task is finished."""
        for event in self.stream(task_id, timeout=timeout):
            if isinstance(event, OutputEvent):
                yield event.data

    def follow(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[Task], object] | None = None,
        on_output: Callable[[OutputEvent], object] | None = None,
    ) -> Task:
        """Read the task's stream to its end and return the finished task, calling
        `on_progress(task)` on each status event and `on_output(chunk)` on each chunk."""
        for event in self.stream(task_id, timeout=timeout):
            finished = deliver(event, on_progress, on_output)
            if finished is not None:
                return finished
        raise AssertionError("a stream ends with its done event")  # pragma: no cover

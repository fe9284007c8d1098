"""Following a task to its end with the synchronous client: polling (`wait`) or reading its
stream (`stream`, `output`, `follow`). `Client` has these methods from `Following`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from taskgate import _api
from taskgate._http import Connection
from taskgate._waiting import FIRST_PAUSE, STREAM_BROKEN, next_pause, rate_limit_pause
from taskgate.errors import RateLimited, WaitTimeout
from taskgate.models import Task
from taskgate.streaming import READ_TIMEOUT_S, DoneEvent, OutputEvent, StreamState, TaskEvent, parse_sse


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
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = FIRST_PAUSE
        seen: tuple[str, int] | None = None
        while True:
            try:
                task = self.get_task(task_id)
            except RateLimited as exc:
                time.sleep(rate_limit_pause(exc, deadline))
                continue
            if (task.status, task.progress) != seen:
                seen = (task.status, task.progress)
                if on_progress is not None:
                    on_progress(task)
            if task.is_finished:
                return task
            sleep_s = pause
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    assert timeout is not None
                    raise WaitTimeout(task, timeout)
                sleep_s = min(pause, left)
            time.sleep(sleep_s)
            pause = next_pause(pause)

    def stream(
        self, task_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> Iterator[TaskEvent]:
        """The task's events as they come (`GET /api/task/:id/stream`): `StatusEvent` on each
        change, `OutputEvent` for every output chunk from the first, and a last `DoneEvent`
        with the finished task. A stream that ends early or breaks is read again from the last
        event (`Last-Event-ID`), and no chunk is yielded twice. After `timeout` seconds (None:
        no limit) it raises `WaitTimeout`."""
        state = StreamState(task_id, last_event_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        path = _api.stream_path(task_id)
        while True:
            read_s = (
                READ_TIMEOUT_S
                if deadline is None
                else max(0.1, min(READ_TIMEOUT_S, deadline - time.monotonic()))
            )
            try:
                with self._http.stream(path, state.headers(), read_s) as lines:
                    try:
                        for sse in parse_sse(lines):
                            event = state.read(sse)
                            if event is not None:
                                yield event
                            if state.done:
                                return
                    except STREAM_BROKEN:
                        pass  # read again from the last event
            except RateLimited as exc:
                time.sleep(rate_limit_pause(exc, deadline))
                continue
            time.sleep(state.reconnect_s)
            if deadline is not None and time.monotonic() >= deadline:
                assert timeout is not None
                raise WaitTimeout(self.get_task(task_id), timeout)

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
            if isinstance(event, OutputEvent):
                if on_output is not None:
                    on_output(event)
            elif on_progress is not None:
                on_progress(event.task)
            if isinstance(event, DoneEvent):
                return event.task
        raise AssertionError("a stream ends with its done event")  # pragma: no cover

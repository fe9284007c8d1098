"""How the clients wait, without I/O: the steps of a polling `wait()` (`Polling`), of reading a
task's stream (`Reading`) and of `follow()` (`deliver`). `Client` and `AsyncClient` only send
the requests and sleep for the pauses these ask for, so the two wait alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from taskgate._api import stream_path
from taskgate.errors import RateLimited, WaitTimeout
from taskgate.streaming import READ_TIMEOUT_S, DoneEvent, OutputEvent, SseDecoder, StreamState, TaskEvent

if TYPE_CHECKING:
    from taskgate.models import Task

# wait(): the pause between polls grows from the first to the last, so a long wait costs about
# one request a second, well inside the default rate limit (100 a minute).
FIRST_PAUSE = 0.1
LAST_PAUSE = 1.0
PAUSE_GROWTH = 1.5
# The errors that end a stream midway: it is then read again from its last event.
STREAM_BROKEN = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def rate_limit_pause(exc: RateLimited, deadline: float | None) -> float:
    """How long to wait out a 429 while polling or streaming; raises it when that would pass
    the deadline."""
    wait_s = exc.retry_after if exc.retry_after is not None else LAST_PAUSE
    if deadline is not None and wait_s > deadline - time.monotonic():
        raise exc
    return wait_s


def next_pause(pause: float) -> float:
    return min(pause * PAUSE_GROWTH, LAST_PAUSE)


class _Deadline:
    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def rate_limited(self, exc: RateLimited) -> float:
        """The pause a 429 asks for; raises it when that would pass the deadline."""
        return rate_limit_pause(exc, self.deadline)

    def timed_out(self, task: Task) -> WaitTimeout:
        assert self.timeout is not None
        return WaitTimeout(task, self.timeout)


class Polling(_Deadline):
    """A `wait()`: the client reads the task, hands each reading to `read`, and sleeps for the
    pause it returns, until it returns None (the task is finished)."""

    def __init__(self, timeout: float | None, on_progress: Callable[[Task], object] | None) -> None:
        super().__init__(timeout)
        self._on_progress = on_progress
        self._pause = FIRST_PAUSE
        self._seen: tuple[str, int] | None = None

    def read(self, task: Task) -> float | None:
        """The pause before the next poll, or None when the task is finished; raises
        `WaitTimeout` when the time is up. Calls `on_progress` on every change."""
        if (task.status, task.progress) != self._seen:
            self._seen = (task.status, task.progress)
            if self._on_progress is not None:
                self._on_progress(task)
        if task.is_finished:
            return None
        pause = self._pause
        self._pause = next_pause(pause)
        if self.deadline is None:
            return pause
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timed_out(task)
        return min(pause, left)


class Reading(_Deadline):
    """A `stream()`: the client sends the GET that `request()` describes, feeds each line of
    the response to `feed`, yields the events it returns and stops once `done`. A response
    that ends or breaks early is followed by a `reconnect_s` pause and another request, from
    the last event, unless the time is `up()`."""

    def __init__(self, task_id: str, last_event_id: str | None, timeout: float | None) -> None:
        super().__init__(timeout)
        self.path = stream_path(task_id)
        self._state = StreamState(task_id, last_event_id)
        self._decoder = SseDecoder()

    def request(self) -> tuple[str, dict[str, str], float]:
        """The next response's path, headers and read timeout."""
        self._decoder = SseDecoder()  # a new response: no half-read event carries over
        read_s = READ_TIMEOUT_S
        if self.deadline is not None:
            read_s = max(0.1, min(READ_TIMEOUT_S, self.deadline - time.monotonic()))
        return self.path, self._state.headers(), read_s

    def feed(self, line: str) -> list[TaskEvent]:
        sse = self._decoder.feed(line)
        event = None if sse is None else self._state.read(sse)
        return [] if event is None else [event]

    @property
    def done(self) -> bool:
        return self._state.done

    @property
    def reconnect_s(self) -> float:
        return self._state.reconnect_s

    def up(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def deliver(
    event: TaskEvent,
    on_progress: Callable[[Task], object] | None,
    on_output: Callable[[OutputEvent], object] | None,
) -> Task | None:
    """One event of a `follow()` handed to its callbacks; the finished task at the end."""
    if isinstance(event, OutputEvent):
        if on_output is not None:
            on_output(event)
    elif on_progress is not None:
        on_progress(event.task)
    return event.task if isinstance(event, DoneEvent) else None

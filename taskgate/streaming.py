"""A task's stream (`GET /api/task/:id/stream`, Server-Sent Events), read the same way by the
sync and the async client: the events as typed values, and what a reconnect must send.

The gateway sends `status` events (the task on each change), `output` events (`{"index",
"data"}`, every chunk from the first) and a final `done` event with the finished task, after
which the stream ends. A response may end before `done` (on AWS each one carries what arrives
within a bounded wait): the reader reconnects with `Last-Event-ID` and goes on where it left
off, and an output chunk seen already (by its index) is not yielded twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from taskgate.errors import TaskgateError
from taskgate.models import Task

# How long to wait before reconnecting when the gateway does not say (`retry:`), seconds.
DEFAULT_RECONNECT_S = 0.5
# A stream silent this long is reconnected (with Last-Event-ID: nothing is missed).
READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StatusEvent:
    """The task changed (status, progress, message)."""

    task: Task


@dataclass(frozen=True)
class OutputEvent:
    """A chunk the backend emitted: `index` counts from 0, `data` is any JSON value."""

    index: int
    data: Any


@dataclass(frozen=True)
class DoneEvent:
    """The task is finished; the stream ends."""

    task: Task


TaskEvent = StatusEvent | OutputEvent | DoneEvent


@dataclass
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry_ms: int | None = None


class SseDecoder:
    """A text/event-stream read line by line (the WHATWG rules: `data:` lines join with
    newlines, comments and unknown fields are ignored, a blank line ends an event, and an
    event cut off by the end of the stream is dropped)."""

    def __init__(self) -> None:
        self._event = ServerSentEvent()
        self._data: list[str] = []

    def feed(self, raw: str) -> ServerSentEvent | None:
        """The event this line completes, if it does."""
        line = raw.rstrip("\r\n")
        if not line:
            event, data = self._event, self._data
            self._event, self._data = ServerSentEvent(), []
            if data:
                event.data = "\n".join(data)
                return event
            if event.id is not None or event.retry_ms is not None:
                return ServerSentEvent(event="", id=event.id, retry_ms=event.retry_ms)
            return None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event.event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._event.id = value
        elif name == "retry" and value.isdigit():
            self._event.retry_ms = int(value)
        return None


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    decoder = SseDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


class _OutputBody(msgspec.Struct):
    index: int
    data: Any = None


@dataclass
class StreamState:
    """Where a reader is in a task's stream: what to send on reconnect, and which events it
    has yielded already."""

    task_id: str
    last_event_id: str | None = None
    next_index: int = 0  # the first output index not yielded yet
    reconnect_s: float = DEFAULT_RECONNECT_S
    done: bool = False

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def read(self, sse: ServerSentEvent) -> TaskEvent | None:
        """The typed event, or None for one to skip (a chunk yielded already, an unknown
        event type, the id-only or retry-only event)."""
        if sse.id is not None:
            self.last_event_id = sse.id
        if sse.retry_ms is not None:
            self.reconnect_s = sse.retry_ms / 1000
        try:
            if sse.event == "output":
                chunk = msgspec.json.decode(sse.data, type=_OutputBody)
                if chunk.index < self.next_index:
                    return None
                self.next_index = chunk.index + 1
                return OutputEvent(chunk.index, chunk.data)
            if sse.event in ("status", "done"):
                task = msgspec.json.decode(sse.data, type=Task)
                if sse.event == "done":
                    self.done = True
                    return DoneEvent(task)
                return StatusEvent(task)
        except msgspec.MsgspecError as exc:
            raise TaskgateError(
                200, "Unexpected reply", f"stream of {self.task_id}: {sse.event}: {exc}"
            ) from exc
        return None

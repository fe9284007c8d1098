"""A Server-Sent Events reader for the e2e tests, behaving as a browser's EventSource does:
it parses `id:`, `event:`, `data:` and `retry:` lines, and when a response ends before the
`done` event it reconnects with `Last-Event-ID` (after the `retry:` it was told)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    kind: str
    data: Any
    id: str | None = None


@dataclass
class Stream:
    events: list[Event] = field(default_factory=list)
    # One entry per HTTP response: its status and the Last-Event-ID it was asked with.
    responses: list[tuple[int, str | None]] = field(default_factory=list)
    retry_ms: int | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)

    def of(self, kind: str) -> list[Event]:
        return [event for event in self.events if event.kind == kind]

    def wait_reconnected(self, count: int, timeout: float) -> None:
        """Until the reader has opened `count` responses."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.responses) >= count, timeout), self.responses

    def wait_for(self, count: int, kind: str, timeout: float) -> list[Event]:
        """Until `count` events of `kind` have arrived."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.of(kind)) >= count, timeout), (
                f"{count} {kind} events not within {timeout} s: {self.events}"
            )
            return self.of(kind)


def read(
    base: str, task_id: str, token: str, stream: Stream, *, last_id: str | None = None, timeout: float = 60
) -> Stream:
    """Follow the task's stream until `done` (reconnecting as EventSource would)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=httpx.Timeout(10.0, read=timeout)) as client:
        while time.monotonic() < deadline:
            headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            with client.stream("GET", f"/api/task/{task_id}/stream", headers=headers) as reply:
                with stream.changed:
                    stream.responses.append((reply.status_code, last_id))
                    stream.changed.notify_all()
                if reply.status_code != 200:
                    reply.read()
                    return stream
                assert reply.headers["content-type"].startswith("text/event-stream")
                last_id = _parse(reply, stream, last_id)
            if stream.of("done"):
                return stream
            time.sleep((stream.retry_ms or 1000) / 1000)
    raise AssertionError(f"no done event within {timeout} s: {stream.events}")


def _parse(reply: httpx.Response, stream: Stream, last_id: str | None) -> str | None:
    kind, data, event_id = "message", [], None
    for line in reply.iter_lines():
        if line == "":
            if data:
                with stream.changed:
                    stream.events.append(Event(kind, json.loads("\n".join(data)), event_id))
                    stream.changed.notify_all()
                if event_id is not None:
                    last_id = event_id
            kind, data, event_id = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
            elif name == "retry":
                stream.retry_ms = int(value)
    return last_id


def follow(base: str, task_id: str, token: str, **kwargs: Any) -> tuple[Stream, threading.Thread]:
    """`read` on a thread: the test acts while the stream is open."""
    stream = Stream()
    thread = threading.Thread(target=read, args=(base, task_id, token, stream), kwargs=kwargs, daemon=True)
    thread.start()
    return stream, thread

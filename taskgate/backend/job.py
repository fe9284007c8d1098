"""What a handler receives: the task taskgate sent (`JobRequest`, read from the predict body)
and the `Job` it works on, whose `progress` and `emit` queue reports in order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from taskgate.backend.reports import Report

# taskgate keeps a task's message up to this many characters (its PUT refuses longer ones).
MAX_MESSAGE_CHARS = 1024


class BadJobRequest(ValueError):
    """The predict body is not a task taskgate would send; `str()` names the field."""


@dataclass(frozen=True)
class JobRequest:
    """The predict body (DESIGN.md, Backend protocol), the fields a backend needs."""

    id: str
    type: str
    priority: int
    payload: dict[str, Any]
    capabilities: list[str]
    callback_url: str
    callback_token: str
    # Seconds taskgate gives this attempt, counted from receipt (the body's `timeout`, ms):
    # relative, so the backend's clock need not agree with the gateway's.
    timeout_s: float | None
    attempt: int | None = None

    @classmethod
    def parse(cls, body: Any, idempotency_key: str | None = None) -> JobRequest:
        if not isinstance(body, dict):
            raise BadJobRequest("The body must be a JSON object")
        nested = body.get("request")
        request: dict[str, Any] = nested if isinstance(nested, dict) else body
        task_id = body.get("task_id") or body.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise BadJobRequest("task_id (or id) is required: a non-empty string")
        for name in ("callback_url", "callback_token"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise BadJobRequest(f"{name} is required: a non-empty string")
        payload = request.get("payload", {})
        if not isinstance(payload, dict):
            raise BadJobRequest("payload must be a JSON object")
        priority = request.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise BadJobRequest("priority must be an integer")
        capabilities = request.get("capabilities") or []
        if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
            raise BadJobRequest("capabilities must be a list of strings")
        timeout = body.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
            raise BadJobRequest("timeout must be a number of milliseconds")
        # taskgate's Idempotency-Key is `<task id>:<attempt>`.
        _, _, attempt = (idempotency_key or "").rpartition(":")
        return cls(
            id=task_id,
            type=str(request.get("type") or ""),
            priority=priority,
            payload=payload,
            capabilities=list(capabilities),
            callback_url=body["callback_url"],
            callback_token=body["callback_token"],
            timeout_s=None if timeout is None else max(0.0, timeout / 1000),
            attempt=int(attempt) if attempt.isdigit() else None,
        )


@dataclass(eq=False)
class Job:
    """One task being worked on. `progress()` and `emit()` are plain calls from a plain or an
    `async` handler (from any thread): each queues a report, sent in call order after the
    ones before it. `cancelled` turns true when taskgate cancels the task, its time is up, or
    taskgate refuses a report as no longer current (409): a long handler should check it."""

    request: JobRequest
    _submit: Callable[[Report], None] = field(repr=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def type(self) -> str:
        return self.request.type

    @property
    def priority(self) -> int:
        return self.request.priority

    @property
    def payload(self) -> dict[str, Any]:
        return self.request.payload

    @property
    def capabilities(self) -> list[str]:
        return self.request.capabilities

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block (a plain handler's thread) until cancelled or `timeout` s; True if cancelled."""
        return self._cancelled.wait(timeout)

    def progress(self, percent: int, message: str | None = None) -> None:
        """Report progress (0-100) and optionally a short message (up to 1024 characters)."""
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError(f"progress must be an integer from 0 to 100, not {percent!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError("message must be a string")
        body: dict[str, Any] = {"status": "PROCESSING", "progress": percent}
        if message is not None:
            body["message"] = message[:MAX_MESSAGE_CHARS]
        self._submit(Report.progress(body))

    def emit(self, data: Any) -> None:
        """Append a chunk of output (any JSON value) to the task's streamed output."""
        try:
            encoded = msgspec.json.encode(data)
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"emit() takes a JSON value: {exc}") from None
        self._submit(Report.output(encoded))

    def _cancel(self) -> None:
        self._cancelled.set()


def submitter(loop: asyncio.AbstractEventLoop, put: Callable[[Report], None]) -> Callable[[Report], None]:
    """`put` made callable from any thread: a plain handler runs in a worker thread, and the
    report queue belongs to the event loop."""
    loop_thread = threading.get_ident()

    def submit(report: Report) -> None:
        if threading.get_ident() == loop_thread:
            put(report)
        else:
            loop.call_soon_threadsafe(put, report)

    return submit

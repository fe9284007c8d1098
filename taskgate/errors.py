"""The errors the client raises: one class per HTTP status the API answers with, under one
base, so `except TaskgateError` catches every failure of a call, network failures included.

The names follow HTTP's (`NotFound`, `Conflict`, ...) since each stands for one status.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import TYPE_CHECKING

import httpx
import msgspec

if TYPE_CHECKING:
    from taskgate.models import Task


class TaskgateError(Exception):
    """A call failed: `status` is the HTTP status (None when no answer came), `error` and
    `details` the body's fields. `retry_after` is the Retry-After header in seconds, if any."""

    def __init__(
        self, status: int | None, error: str, details: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(status, error, details)
        self.status = status
        self.error = error
        self.details = details
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = "" if self.status is None else f"{self.status} "
        return f"{prefix}{self.error}: {self.details}"


class BadRequest(TaskgateError):
    """400: the request is malformed; `details` names the field."""


class Unauthorized(TaskgateError):
    """401: no token, or one that does not verify (expired, wrong secret)."""


class Forbidden(TaskgateError):
    """403: the token is valid but its role may not do this (e.g. a user calling an admin call)."""


class NotFound(TaskgateError):
    """404: no such task or server, or one this principal may not see."""


class Conflict(TaskgateError):
    """409: the state forbids it (cancelling a finished task, a duplicate server id)."""


class PayloadTooLarge(TaskgateError):
    """413: the request body is over the gateway's limit (256 KiB)."""


class RateLimited(TaskgateError):
    """429: over the principal's rate limit; `retry_after` says when the window ends."""


class ServerError(TaskgateError):
    """5xx: the gateway failed (500) or is briefly unavailable (503, with `retry_after`)."""


class NetworkError(TaskgateError):
    """No HTTP answer: the gateway could not be reached, or did not answer in time."""

    def __init__(self, error: str, details: str) -> None:
        super().__init__(None, error, details)


class WaitTimeout(TimeoutError):
    """`Client.wait` gave up: the task was not finished by the deadline. `task` is the task as
    last seen (still PENDING or PROCESSING)."""

    def __init__(self, task: Task, timeout: float) -> None:
        super().__init__(f"task {task.id} not finished after {timeout:g} s (status {task.status.value})")
        self.task = task
        self.timeout = timeout


_BY_STATUS: dict[int, type[TaskgateError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")


class _ErrorBody(msgspec.Struct):
    error: str
    details: str


def from_response(response: httpx.Response) -> TaskgateError:
    """The error for a response with a 4xx or 5xx status. A body that is not the documented
    `{"error", "details"}` (a proxy's HTML page, say) is reported by its reason and first text."""
    try:
        body = msgspec.json.decode(response.content, type=_ErrorBody)
        error, details = body.error, body.details
    except msgspec.MsgspecError:
        error = response.reason_phrase or "HTTP error"
        details = " ".join(response.text.split())[:200] or "(empty body)"
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else TaskgateError)
    return kind(status, error, details, retry_after=retry_after(response.headers.get("retry-after")))


def retry_after(header: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if header is None:
        return None
    header = header.strip()
    if _SECONDS.fullmatch(header):
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))

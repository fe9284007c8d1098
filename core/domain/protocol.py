"""The backend protocol: what taskgate sends to `endpoints.predict` and how it reads the answer.

Pure functions: the HTTP call itself belongs to the runtime (asyncio on one machine, a
blocking pool in a Lambda), so both deployments share every decision made here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgspec

from core.domain.models import Server, Task

ACCEPTED_STATUSES = frozenset({"accepted", "queued", "processing"})
# A backend's error text is kept, but not without bound.
MAX_ERROR_CHARS = 2000
# The most a result may take, inline answer or callback body alike (the request body limit,
# Config.max_body_bytes): past it the task FAILS saying so (docs/DEPLOY.md, Payload limits).
MAX_RESULT_BYTES = 256 * 1024


@dataclass(frozen=True)
class BackendRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    timeout_s: float
    # Named in the errors a user sees instead of the URL (which may carry a key).
    server_id: str = ""


def predict_request(
    task: Task, server: Server, *, callback_url: str, callback_token: str, now: int
) -> BackendRequest:
    """The predict call: a body that is a superset of both protocols in use."""
    remaining_ms = max(1, (task.deadline or now) - now)
    request = {
        "type": task.type,
        "priority": task.priority,
        "payload": task.payload,
        "capabilities": task.capabilities,
        "async": task.is_async,
    }
    body = {
        "id": task.id,
        "task_id": task.id,
        **request,
        "request": request,
        "callback_url": callback_url,
        "callback_token": callback_token,
        "timeout": remaining_ms,
        # When taskgate gives up on this attempt (epoch ms): it frees the server's slot then,
        # so a backend may stop working on it (and the tests stop counting it in flight).
        "deadline": task.deadline,
    }
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"{task.id}:{task.attempts}"}
    if server.api_key:
        headers["Authorization"] = f"Bearer {server.api_key}"
    return BackendRequest(
        server.endpoints.predict, headers, msgspec.json.encode(body), remaining_ms / 1000, server.id
    )


class Kind(enum.Enum):
    ACCEPTED = "accepted"  # working asynchronously; callbacks will follow
    COMPLETED = "completed"  # finished inline, with a result
    FAILED = "failed"  # a permanent failure: do not retry
    BUSY = "busy"  # try another server; not a failed attempt
    RETRY = "retry"  # a failed attempt: retry on another server, after a backoff


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    result: Any = None
    error: str | None = None


def _decode(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body.decode("utf-8", errors="replace")


def _error_text(status: int, data: Any) -> str:
    if isinstance(data, dict):
        for key in ("error", "details", "message", "detail"):
            if data.get(key):
                detail = data[key]
                text = detail if isinstance(detail, str) else msgspec.json.encode(detail).decode()
                return f"Backend answered {status}: {text}"[:MAX_ERROR_CHARS]
    if isinstance(data, str) and data:
        return f"Backend answered {status}: {data}"[:MAX_ERROR_CHARS]
    return f"Backend answered {status}"


def classify(status: int, body: bytes) -> Outcome:
    """Read a predict answer (docs/BACKENDS.md, Predict)."""
    data = _decode(body)
    if status in (429, 503):
        return Outcome(Kind.BUSY, error=_error_text(status, data))
    if status >= 500:
        return Outcome(Kind.RETRY, error=_error_text(status, data))
    if status >= 400:
        return Outcome(Kind.FAILED, error=_error_text(status, data))
    if status < 200 or status >= 300:
        return Outcome(Kind.RETRY, error=f"Backend answered {status}")
    reported = str(data.get("status", "")).lower() if isinstance(data, dict) else ""
    if len(body) > MAX_RESULT_BYTES and status != 202 and reported not in ACCEPTED_STATUSES:
        return Outcome(
            Kind.FAILED,
            error=f"Result too large: the backend answered {len(body)} bytes, over the"
            f" {MAX_RESULT_BYTES // 1024} KiB a task's result may take",
        )
    if status == 202 or reported in ACCEPTED_STATUSES:
        return Outcome(Kind.ACCEPTED)
    if reported == "error":
        return Outcome(Kind.FAILED, error=_error_text(status, data))
    if isinstance(data, dict) and "result" in data:
        return Outcome(Kind.COMPLETED, result=data["result"])
    return Outcome(Kind.COMPLETED, result=data)


def transport_failure(error: BaseException, server_id: str, kind: str | None = None) -> Outcome:
    """A connection error or timeout: a failed attempt. The error names the server and the
    kind of failure, never the URL or the exception's text (users read it; the runtime logs
    the detail for operators)."""
    kind = kind or type(error).__name__
    return Outcome(Kind.RETRY, error=f"Server {server_id} unreachable ({kind})"[:MAX_ERROR_CHARS])


def refused_call(reason: str, final: bool, server_id: str) -> Outcome:
    """A predict call the URL guard stopped: refused for good (`final`) or not resolvable."""
    error = f"Server {server_id}: {reason}"[:MAX_ERROR_CHARS]
    return Outcome(Kind.FAILED if final else Kind.RETRY, error=error)


def health_ok(status: int, body: bytes, server_id: str) -> tuple[bool, str | None]:
    """A health answer: 2xx is healthy, unless it names another server (`model.server_id`)."""
    if not 200 <= status < 300:
        return False, f"health answered {status}"
    data = _decode(body)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        reported = data["model"].get("server_id")
        if reported is not None and reported != server_id:
            return False, f"health reports server_id {reported!r}, registered as {server_id!r}"
    return True, None

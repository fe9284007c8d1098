"""Real-time task updates over WebSocket: the messages, the same in both deployments.

Client to server: `{"type": "subscribe", "taskId": ...}` and `{"type": "unsubscribe", "taskId":
...}`. Server to client: `{"type": "task", "task": <the GET /api/task/{id} body>}` on subscribe
and on every change of the task, `{"type": "output", "taskId", "index", "data"}` for each chunk
of streamed output stored while subscribed (GET /api/task/{id}/stream has them all, from the
first), and `{"type": "error", "error": ..., "details": ...}` in the HTTP errors' vocabulary. A
terminal task's message is its last one.

One machine: core.local.update_hub fans writes out in process. AWS: core.aws.update_push, fed by the
table's stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from core.domain import auth
from core.domain.ids import check_path_id
from core.domain.models import OutputChunk, Task
from core.errors import (
    NotFoundError,
    RateLimitedError,
    TaskgateError,
    UnauthorizedError,
    UnavailableError,
    ValidationError,
)
from core.services import task_view
from core.services.context import Context

# A subscribe message is tens of bytes; anything much larger is not one.
MAX_MESSAGE_BYTES = 4096
# Tasks one connection may follow at once: bounds what a connection can make the server hold.
MAX_SUBSCRIPTIONS = 100
_FIELDS = ("type", "taskId")

ERROR_TITLES: dict[type[TaskgateError], str] = {
    ValidationError: "Bad request",
    UnauthorizedError: "Unauthorized",
    NotFoundError: "Not found",
    RateLimitedError: "Too many requests",
    UnavailableError: "Service unavailable",
}
INTERNAL_ERROR = {
    "type": "error",
    "error": "Internal server error",
    "details": "An unexpected error occurred",
}


@dataclass(frozen=True)
class ClientMessage:
    type: Literal["subscribe", "unsubscribe"]
    task_id: str


def parse(raw: str | bytes | None) -> ClientMessage:
    """A client's message, or ValidationError naming what is wrong (the field, the type)."""
    if raw is None:
        raise ValidationError("Message is empty: send a JSON object")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ValidationError(f"Message is over {MAX_MESSAGE_BYTES} bytes")
    try:
        body: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ValidationError("Message is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationError("Message must be a JSON object")
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise ValidationError(f"Unknown field: {unknown[0]}")
    kind = body.get("type")
    if kind is None:
        raise ValidationError("Missing required field: type")
    if kind not in ("subscribe", "unsubscribe"):
        raise ValidationError("Invalid value for field: type (use subscribe or unsubscribe)")
    task_id = body.get("taskId")
    if task_id is None:
        raise ValidationError("Missing required field: taskId")
    if not isinstance(task_id, str):
        raise ValidationError("Invalid type for field: taskId (expected a string)")
    return ClientMessage(kind, check_path_id(task_id, "task"))


def connect(ctx: Context, token: str | None) -> auth.Principal:
    """The principal behind a connection's `?token=`, or UnauthorizedError."""
    if not token:
        raise UnauthorizedError("Missing token: connect with ?token=<JWT>")
    return auth.verify(ctx.jwt_secret, f"Bearer {token}")


TOKEN_EXPIRED = "Token expired: connect again with a new token"


def seconds_left(principal: auth.Principal, now_ms: int) -> float | None:
    """How long a connection opened with this principal's token may stay open (None: no end)."""
    if principal.expires_s is None:
        return None
    return principal.expires_s - now_ms / 1000


def check_live(principal: auth.Principal, now_ms: int) -> None:
    """UnauthorizedError once the connection's token has expired."""
    left = seconds_left(principal, now_ms)
    if left is not None and left <= 0:
        raise UnauthorizedError(TOKEN_EXPIRED)


def current_task(ctx: Context, principal: auth.Principal, task_id: str) -> Task:
    """The task a subscribe asks for, if the principal may follow it (else 'Not found', the
    same as for an unknown id); refused once the connection's token has expired."""
    check_live(principal, ctx.now())
    return auth.followed_task(principal, ctx.store.get_task(task_id), task_id)


def task_message(task: Task) -> bytes:
    return msgspec.json.encode({"type": "task", "task": task.to_api()})


def snapshot_message(ctx: Context, task: Task) -> bytes:
    """The first message of a subscription: the task exactly as GET shows it (while PENDING,
    why it waits). Later messages are the writes themselves (`task_message`)."""
    return msgspec.json.encode({"type": "task", "task": task_view.describe(ctx, task)})


def output_message(chunk: OutputChunk) -> bytes:
    return msgspec.json.encode(
        {"type": "output", "taskId": chunk.task_id, "index": chunk.index, "data": chunk.data}
    )


def error_message(exc: Exception) -> bytes:
    """`exc` in the HTTP errors' vocabulary; anything unexpected is a generic error."""
    if isinstance(exc, TaskgateError):
        for kind in type(exc).__mro__:
            if kind in ERROR_TITLES:
                return msgspec.json.encode(
                    {"type": "error", "error": ERROR_TITLES[kind], "details": exc.details}
                )
    return msgspec.json.encode(INTERNAL_ERROR)

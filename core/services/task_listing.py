"""What the dashboard's queue view reads: tasks newest first, a page at a time, and the queue
at a glance (the backlog by priority, the tasks in flight, the fleet's capacity).

A page's cursor is the store's position of its last task (`<createdAt:13>#<id>`), base64url
encoded so clients treat it as opaque; a cursor that does not decode to such a position is a
400, like any malformed query parameter.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from core.domain import auth, outlier, queue_reason
from core.domain.auth import Principal
from core.domain.models import Server, ServerStatus, TaskStatus
from core.errors import ValidationError
from core.services.context import Context

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_POSITION = re.compile(r"[0-9]{13}#[A-Za-z0-9_-]{1,128}")
_STATUSES = ", ".join(status.value for status in TaskStatus)


def list_tasks(
    ctx: Context, principal: Principal, *, status: str | None, limit: str | None, cursor: str | None
) -> dict[str, Any]:
    """Admins see every task; a user sees only its own."""
    auth.require_any(principal, auth.USER, auth.ADMIN)
    page = ctx.store.list_tasks(
        _limit(limit),
        status=_status(status),
        owner=None if principal.is_admin else principal.sub,
        before=None if cursor is None else decode_cursor(cursor),
    )
    return {
        "tasks": [task.to_summary() for task in page.tasks],
        "nextCursor": None if page.after is None else encode_cursor(page.after),
    }


def queue_summary(ctx: Context, principal: Principal) -> dict[str, Any]:
    """The backlog by priority (highest first), the tasks in flight (the slots taken: each is a
    task PROCESSING there), the slots of the servers taking tasks now, and the backlog by
    capability set with why each set waits ("312 tasks need `tpu`, which no server has")."""
    auth.require_any(principal, auth.USER, auth.ADMIN)
    return queue_view(ctx, ctx.store.list_servers())


def queue_view(ctx: Context, servers: list[Server]) -> dict[str, Any]:
    """The QueueSummary body, on the fleet as the caller read it (the overview shares it)."""
    by_need = ctx.store.pending_by_need()
    by_priority: dict[int, int] = {}
    by_capabilities: dict[tuple[str, ...], int] = {}
    for (priority, capabilities), count in by_need.items():
        by_priority[priority] = by_priority.get(priority, 0) + count
        by_capabilities[capabilities] = by_capabilities.get(capabilities, 0) + count
    backlog = queue_reason.backlog_rows(
        by_capabilities.items(),
        servers,
        ctx.now(),
        slot_limit=lambda s: outlier.slot_limit(s, ctx.now(), ctx.config.outlier),
    )
    return {
        "pending": sum(by_priority.values()),
        "pendingByPriority": [
            {"priority": priority, "count": by_priority[priority]}
            for priority in sorted(by_priority, reverse=True)
        ],
        "processing": sum(server.active_tasks for server in servers),
        "capacity": sum(s.max_concurrent for s in servers if s.status is ServerStatus.ONLINE),
        "backlog": backlog,
    }


# A cursor is the position itself, `<13 digits>.<task id>`: a form the OpenAPI document can
# state exactly (CURSOR_PATTERN), so every cursor it allows is one the server reads.
CURSOR_PATTERN = r"^[0-9]{13}\.[A-Za-z0-9_-]{1,128}$"


def encode_cursor(position: str) -> str:
    return position.replace("#", ".", 1)


def decode_cursor(cursor: str) -> str:
    if re.fullmatch(CURSOR_PATTERN[1:-1], cursor):
        position = cursor.replace(".", "#", 1)
    else:  # the base64 form of earlier releases, still read
        try:
            position = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            position = ""
    if not _POSITION.fullmatch(position):
        raise ValidationError("cursor is not one this API returned")
    return position


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    # ASCII digits only: str.isdigit() is also true of '²' and other digits int() refuses.
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise ValidationError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(text)


def _status(text: str | None) -> TaskStatus | None:
    if text is None:
        return None
    try:
        return TaskStatus(text)
    except ValueError:
        raise ValidationError(f"status must be one of {_STATUSES}") from None

"""A task as GET /api/task/:id shows it: the stored task, and while it is PENDING, why it
waits (`queue`), from this process's view of the fleet (refreshed at most every FLEET_CACHE):
no store read beyond the task's own, at most one list of the servers a second."""

from __future__ import annotations

from typing import Any

from core.domain import queue_reason
from core.domain.models import Task, TaskStatus
from core.domain.queue_reason import Reason
from core.services.context import Context


def describe(ctx: Context, task: Task) -> dict[str, Any]:
    body = task.to_api()
    if task.status is TaskStatus.PENDING:
        body["queue"] = queue(ctx, task)
    return body


def queue(ctx: Context, task: Task) -> dict[str, Any]:
    now = ctx.now()
    servers = ctx.fleet.servers()
    why = queue_reason.explain_task(task, servers, now, slot_limit=ctx.fleet.slot_limit)
    body: dict[str, Any] = {"reason": why.reason.value, "details": why.details}
    if why.reason is Reason.DISPATCHING:
        body["estimatedStartAt"] = now
    return body

"""A task as GET /api/task/:id shows it: the stored task, and while it is PENDING, why it
waits (`queue`), from this process's view of the fleet (refreshed at most every FLEET_CACHE),
and its place under the scheduler's ordering: two reads of the scheduling index (the owner
queues' counts, and how many of its own owner queue are ahead of it)."""

from __future__ import annotations

from typing import Any

from core.domain import queue_reason
from core.domain.models import Task, TaskStatus
from core.domain.scheduling import queue_capabilities
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
    queues = [
        queue_reason.QueueCount(queue_capabilities(q.queue), q.priority, q.owner, q.pending)
        for q in ctx.store.owner_queues()
    ]
    place = queue_reason.position(task, ctx.store.queue_ahead(task), queues, servers)
    body["position"] = place
    # Now when about to start; at the capable servers' pace when they are full; else unknown.
    estimate = queue_reason.start_estimate(why, place, task, servers, now, slot_limit=ctx.fleet.slot_limit)
    if estimate is not None:
        body["estimatedStartAt"] = estimate
    return body

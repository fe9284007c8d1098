"""Dispatch: from a PENDING task to a claimed server and a predict call, and from the answer
to the task's next state. The HTTP call is the runtime's (asyncio on one machine, a thread in
a Lambda); every decision and every write is here, shared by both.

A task is claimed (PENDING -> PROCESSING, slot taken, attempts + 1) before its predict call,
so a duplicate message, a second dispatcher or a crash can never send one attempt twice: the
claim is a conditional write that only one caller wins.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from core.domain import attempts, auth, balancer, protocol
from core.domain.models import Server, ServerStatus, Task, TaskStatus
from core.domain.protocol import BackendRequest, Kind, Outcome
from core.errors import NoCapacityError, OwnerLimitError, StaleWriteError
from core.services import outlier_detection, tasks
from core.services.context import Context

log = logging.getLogger(__name__)

ALGORITHM_SETTING = "lb_algorithm"
ROUND_ROBIN_SEQUENCE = "round_robin"
# A callback token outlives the task's deadline by this much (late callbacks get a clear 409).
CALLBACK_TOKEN_GRACE_S = 3600
_rng = random.Random()


@dataclass(frozen=True)
class Assignment:
    """A task claimed on a server, and the predict call to make."""

    task: Task
    server: Server
    request: BackendRequest


@dataclass(frozen=True)
class Waiting:
    """No server could take the task now; it stays PENDING."""

    reason: str
    # The task is not due yet (backoff): look again at this time.
    not_before: int | None = None
    # Nothing in the fleet has a free slot: no other waiting task can go either.
    fleet_full: bool = False
    # The task's owner is at MAX_IN_FLIGHT_PER_OWNER: none of its tasks can go now.
    owner_full: bool = False


@dataclass(frozen=True)
class Skipped:
    """The task is not PENDING (a duplicate message, or it was cancelled or taken)."""

    status: TaskStatus | None


Decision = Assignment | Waiting | Skipped


@dataclass
class Attempt:
    """Servers already tried for this dispatch (busy ones are not asked twice)."""

    busy: set[str] = field(default_factory=set)


def algorithm(ctx: Context) -> str:
    chosen = ctx.fleet.setting(ALGORITHM_SETTING)
    return chosen if chosen in balancer.ALGORITHMS else balancer.DEFAULT_ALGORITHM


def assign(ctx: Context, task: Task | str, attempt: Attempt | None = None) -> Decision:
    """Claim a server for a PENDING task, trying candidates in the balancer's order."""
    if isinstance(task, str):
        found = ctx.store.get_task(task)
        if found is None:
            return Skipped(None)
        task = found
    if task.status is not TaskStatus.PENDING:
        return Skipped(task.status)
    now = ctx.now()
    # After a busy answer the task is tried on the other servers at once; else it waits out
    # its backoff.
    if task.not_before > now and not (attempt and attempt.busy):
        return Waiting("backing off after a failed attempt", not_before=task.not_before)
    busy = attempt.busy if attempt else set()
    order = _order(ctx, task, busy)
    first = next(order, None)
    if first is None and ctx.fleet.age_ms() > 0:
        # Before making the task wait, look at the fleet as it is now: the view may predate
        # a slot freed elsewhere.
        ctx.fleet.invalidate()
        order = _order(ctx, task, busy)
        first = next(order, None)
    if first is None:
        if busy:
            return Waiting("every capable server answered busy", not_before=now + ctx.config.busy_retry_ms)
        fleet = ctx.fleet.servers()
        full = not any(s.free_slots and s.status is ServerStatus.ONLINE for s in fleet)
        return Waiting(balancer.why_waiting(fleet, task), fleet_full=full)
    for server in itertools.chain([first], order):
        try:
            claimed = ctx.store.claim_task(
                task, _claim_changes(ctx, task, server, now), owner_limit=ctx.config.max_in_flight_per_owner
            )
        except NoCapacityError:
            ctx.fleet.invalidate()
            continue
        except OwnerLimitError:
            limit = ctx.config.max_in_flight_per_owner
            return Waiting(f"its owner has {limit} tasks in flight, the most allowed", owner_full=True)
        except StaleWriteError as exc:
            current = exc.current if isinstance(exc.current, Task) else None
            return Skipped(current.status if current else None)
        ctx.fleet.adjust(server.id, +1)
        ctx.events.publish(claimed, TaskStatus.PENDING)
        return Assignment(claimed, server, _request(ctx, claimed, server, now))
    return Waiting("every capable server filled up meanwhile", not_before=now + ctx.config.busy_retry_ms)


def _order(ctx: Context, task: Task, busy: set[str]) -> Iterator[Server]:
    """The servers to try, best first (lazily: usually only the first is needed)."""
    return ctx.fleet.order(
        task,
        algorithm(ctx),
        sequence=lambda: ctx.store.next_in_sequence(ROUND_ROBIN_SEQUENCE),
        rng=_rng,
        avoid=_failed_on(task),
        exclude=busy,
    )


def _failed_on(task: Task) -> set[str]:
    """The servers that just failed the task: its next attempt tries them last."""
    failed = set(task.failed_servers)
    if task.previous_server_id is not None:
        failed.add(task.previous_server_id)
    return failed


def _claim_changes(ctx: Context, task: Task, server: Server, now: int) -> dict[str, Any]:
    timeout = task.timeout_ms or ctx.config.task_timeout_ms
    return {
        "status": TaskStatus.PROCESSING,
        "server_id": server.id,
        "attempts": task.attempts + 1,
        "started_at": now,
        "updated_at": now,
        "deadline": now + timeout,
        "progress": 0,
        "message": None,
        "not_before": 0,
        "history": attempts.opened(task, server.id, now),
    }


def _request(ctx: Context, task: Task, server: Server, now: int) -> BackendRequest:
    ttl_s = max(1, ((task.deadline or now) - now) // 1000) + CALLBACK_TOKEN_GRACE_S
    token = auth.mint(
        ctx.jwt_secret,
        sub=f"server:{server.id}",
        roles=[auth.SERVICE],
        ttl_s=ttl_s,
        server_id=server.id,
        task_id=task.id,
        attempt=task.attempts,
    )
    callback_url = f"{ctx.config.public_url}/api/task/{task.id}"
    return protocol.predict_request(task, server, callback_url=callback_url, callback_token=token, now=now)


def settle(ctx: Context, assignment: Assignment, outcome: Outcome, attempt: Attempt) -> Task | None:
    """Record what the backend answered. Returns the task as it now stands (None if a
    callback or a cancel got there first). After BUSY the task is PENDING again and the
    caller should `assign` it once more: `attempt.busy` keeps that server out."""
    task, server = assignment.task, assignment.server
    try:
        if outcome.kind is Kind.ACCEPTED:
            return task
        if outcome.kind is Kind.COMPLETED:
            return tasks.finish(ctx, task, TaskStatus.COMPLETED, result=outcome.result)
        if outcome.kind is Kind.FAILED:
            return tasks.finish(ctx, task, TaskStatus.FAILED, error=outcome.error)
        if outcome.kind is Kind.BUSY:
            attempt.busy.add(server.id)
            # Not a failed attempt. If no other server takes it now, it waits BUSY_RETRY_DELAY.
            return tasks.requeue(
                ctx, task, outcome.error or "busy", counts=False, backoff_ms=ctx.config.busy_retry_ms
            )
        reason = f"{outcome.error} (attempt {task.attempts} of {task.attempt_limit}, server {server.id})"
        requeued = tasks.requeue(
            ctx, task, reason, backoff_ms=tasks.backoff_ms(ctx, task.attempts), server_failed=True
        )
        outlier_detection.after_failure(ctx, server.id)
        return requeued
    except StaleWriteError:
        # A callback, a cancel or the sweeper moved the task first; their write stands.
        log.info("task moved before its predict answer was recorded", extra={"task_id": task.id})
        return None

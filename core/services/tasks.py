"""Task services: what the task routes, the dispatcher and the sweeper do to tasks, as plain
functions over a Context. Every write is conditional; a caller that loses a race is told."""

from __future__ import annotations

import random
from typing import Any

import msgspec

from core.domain import attempts, auth, balancer, states
from core.domain.auth import Principal
from core.domain.ids import new_task_id
from core.domain.models import Task, TaskStatus, WebhookDelivery
from core.domain.schemas import CreateTask, UpdateTask
from core.domain.urls import WebhookPolicy, check_webhook_url
from core.errors import ConflictError, NotFoundError, StaleWriteError
from core.ports.queue import enqueue_safely
from core.services import webhook_delivery
from core.services.context import Context

PENDING, PROCESSING = TaskStatus.PENDING, TaskStatus.PROCESSING
# A lost race on one task is retried this many times before the caller is told to retry.
_CAS_ROUNDS = 5


def check_create(principal: Principal, body: CreateTask, policy: WebhookPolicy | None = None) -> str | None:
    """What a create checks before it writes anything; returns the webhook URL as it will be
    stored and called (normalised), if any."""
    auth.require_any(principal, auth.USER, auth.ADMIN)
    if body.webhook is None:
        return None
    return check_webhook_url(body.webhook, "webhook", policy or WebhookPolicy())


def create_task(ctx: Context, principal: Principal, body: CreateTask, *, task_id: str | None = None) -> Task:
    """Store a new PENDING task and wake a dispatcher. `task_id` (an Idempotency-Key's claim):
    StaleWriteError if a task with that id exists."""
    webhook = check_create(principal, body, WebhookPolicy(ctx.config.webhook_allowed_networks))
    now = ctx.now()
    task = Task(
        id=task_id or new_task_id(),
        owner=principal.sub,
        type=body.type,
        priority=body.priority,
        payload=body.payload,
        capabilities=sorted(set(body.capabilities)),
        is_async=body.is_async,
        timeout_ms=body.timeout,
        webhook=webhook,
        attempt_limit=ctx.config.max_attempts,
        created_at=now,
        updated_at=now,
        queued_at=now,
    )
    ctx.store.put_task(task)
    ctx.events.publish(task, None)
    enqueue_safely(ctx.queue, task.id, snapshot=task)
    return task


def get_task(ctx: Context, principal: Principal, task_id: str) -> Task:
    return auth.visible_task(principal, ctx.store.get_task(task_id), task_id)


async def wait_finished(ctx: Context, task: Task, wait_ms: int | None = None) -> Task:
    """`async: false` or `Prefer: wait`: the task once finished, or as it stands after
    `wait_ms` (default SYNC_WAIT_S)."""
    wait_ms = ctx.config.sync_wait_ms if wait_ms is None else wait_ms
    waited = await ctx.events.wait_finished(ctx.store, task.id, wait_ms / 1000)
    return waited or task


def applied_wait_s(ctx: Context, preferred_s: int) -> int:
    """The wait a `Prefer: wait=N` gets: N, capped by the deployment (SYNC_WAIT_MAX)."""
    return max(1, min(preferred_s, ctx.config.sync_wait_max_ms // 1000))


def report(ctx: Context, principal: Principal, task_id: str, body: UpdateTask) -> Task:
    """A backend's callback (PUT): progress on a PROCESSING task, or its outcome."""
    if _is_progress(body) and _pins_attempt(principal, task_id):
        return _progress_blind(ctx, principal, task_id, body)
    task = ctx.store.get_task(task_id)
    if task is None:
        raise NotFoundError(f"Task not found: {task_id}")
    auth.check_callback(principal, task)
    if task.status is not PROCESSING:
        raise ConflictError(_not_processing(task))
    status = TaskStatus(body.status) if body.status else PROCESSING
    try:
        if status is PROCESSING:
            changes: dict[str, Any] = {"updated_at": ctx.now()}
            if body.progress is not None:
                changes["progress"] = body.progress
            if body.message is not None:
                changes["message"] = body.message
            updated = ctx.store.update_task(
                task.id, changes, from_status={PROCESSING}, attempts=task.attempts, server_id=task.server_id
            )
            ctx.events.publish(updated, task.status)
            return updated
        return finish(
            ctx,
            task,
            status,
            result=body.result,
            error=body.error,
            message=body.message,
            progress=body.progress,
        )
    except StaleWriteError as exc:
        current = _current(exc)
        raise ConflictError(_not_processing(current) if current else f"Task not found: {task_id}") from None


def refuse_oversized_report(ctx: Context, principal: Principal, task_id: str) -> Task | None:
    """A callback whose body is over the maximum (max_body_bytes): FAIL the PROCESSING task
    with an error that says so, if `principal` may report on it; the caller answers 413.
    Returns the failed task (None if there was nothing to fail). An unauthorized principal
    gets the usual 403/404 from here, and a task no longer PROCESSING is left as it is."""
    task = ctx.store.get_task(task_id)
    if task is None:
        raise NotFoundError(f"Task not found: {task_id}")
    auth.check_callback(principal, task)
    if task.status is not PROCESSING:
        return None
    limit = ctx.config.max_body_bytes
    error = (
        f"Result too large: the backend's report was over the {limit // 1024} KiB a task's result"
        " may take (store large outputs elsewhere and return a reference)"
    )
    try:
        return finish(ctx, task, TaskStatus.FAILED, error=error)
    except StaleWriteError:
        return None  # another report finished it first


def _is_progress(body: UpdateTask) -> bool:
    return body.status in (None, PROCESSING.value)


def _pins_attempt(principal: Principal, task_id: str) -> bool:
    """A callback token: it names the task, its server and the attempt."""
    return (
        principal.is_service
        and principal.task_id == task_id
        and principal.server_id is not None
        and principal.attempt is not None
    )


def _progress_blind(ctx: Context, principal: Principal, task_id: str, body: UpdateTask) -> Task:
    """Progress on the attempt a callback token names, written without reading the task
    first: the write's condition (PROCESSING, that attempt, that server) is the whole check,
    and only a failed condition reads the task to say why (one request per progress report)."""
    changes: dict[str, Any] = {"updated_at": ctx.now()}
    if body.progress is not None:
        changes["progress"] = body.progress
    if body.message is not None:
        changes["message"] = body.message
    try:
        updated = ctx.store.update_task(
            task_id,
            changes,
            from_status={PROCESSING},
            attempts=principal.attempt,
            server_id=principal.server_id,
        )
    except StaleWriteError as exc:
        current = _current(exc)
        if current is None:
            raise NotFoundError(f"Task not found: {task_id}") from None
        auth.check_callback(principal, current)  # another attempt or server: 409 saying so
        raise ConflictError(_not_processing(current)) from None
    ctx.events.publish(updated, PROCESSING)
    return updated


def finish(
    ctx: Context,
    task: Task,
    status: TaskStatus,
    *,
    result: Any = None,
    error: Any = None,
    message: str | None = None,
    progress: int | None = None,
) -> Task:
    """Move a PROCESSING task to COMPLETED or FAILED and free its slot (one atomic write)."""
    now = ctx.now()
    succeeded = status is TaskStatus.COMPLETED
    changes: dict[str, Any] = {
        **_finished(ctx, status, now),
        "progress": 100 if succeeded else (task.progress if progress is None else progress),
    }
    if succeeded:
        changes["result"] = result
        changes["history"] = attempts.closed(task, now, attempts.COMPLETED)
    else:
        changes["error"] = error if error is not None else (message or "Backend reported failure")
        changes["history"] = attempts.closed(task, now, attempts.FAILED, changes["error"])
    if message is not None:
        changes["message"] = message
    elapsed = max(0, now - (task.started_at or now))
    counters = {
        "tasks_processed": 1,
        "success_count" if succeeded else "failure_count": 1,
        "processing_ms_total": elapsed,
    }
    # The backend answered: its run of failed attempts (outlier detection) ends.
    values: dict[str, Any] = {"outlier_failures": 0}
    if succeeded and task.server_id is not None:
        known = ctx.fleet.get(task.server_id)
        values["latency_ewma_ms"] = balancer.next_ewma(known.latency_ewma_ms if known else None, elapsed)
    return _release(ctx, task, changes, counters, values)


def requeue(
    ctx: Context,
    task: Task,
    reason: str,
    *,
    backoff_ms: int = 0,
    counts: bool = True,
    outcome: str = attempts.FAILED,
    server_failed: bool = False,
) -> Task:
    """End a PROCESSING attempt that did not finish (its history entry says `outcome`): back
    to PENDING while attempts remain (after `backoff_ms`), else FAILED with `reason`. Frees
    the slot in the same write. `counts=False` (a busy backend): the attempt is given back,
    as if never made. `server_failed` (no answer, or a 5xx): one more failure in a row for
    outlier detection."""
    now = ctx.now()
    made = task.attempts if counts else task.attempts - 1
    changes: dict[str, Any] = {"updated_at": now, "deadline": None}
    if counts:
        changes["error"] = reason
        changes["history"] = attempts.closed(task, now, outcome, reason)
        if task.server_id is not None and task.server_id not in task.failed_servers:
            changes["failed_servers"] = [*task.failed_servers, task.server_id]
    else:
        changes["history"] = attempts.given_back(task)
    if made < task.attempt_limit:
        changes |= {
            "status": PENDING,
            "attempts": made,
            "server_id": None,
            "previous_server_id": task.server_id,
            "queued_at": now,
            "not_before": now + backoff_ms,
            "started_at": None,
            "progress": 0,
        }
    else:
        changes |= _finished(ctx, TaskStatus.FAILED, now)
    counters = {"failure_count": 1} if counts else {}
    if server_failed:
        counters["outlier_failures"] = 1
    released = _release(ctx, task, changes, counters, {})
    if released.status is PENDING:
        enqueue_safely(ctx.queue, released.id, delay_ms=backoff_ms, snapshot=released)
    return released


def time_out(ctx: Context, task: Task, reason: str) -> Task:
    """Execution timeout: retried while attempts remain, else TIMEOUT."""
    if task.attempts < task.attempt_limit:
        return requeue(ctx, task, reason, outcome=attempts.TIMEOUT)
    now = ctx.now()
    changes: dict[str, Any] = {
        **_finished(ctx, TaskStatus.TIMEOUT, now),
        "error": reason,
        "history": attempts.closed(task, now, attempts.TIMEOUT, reason),
    }
    return _release(ctx, task, changes, {"tasks_processed": 1, "failure_count": 1}, {})


def expire_pending(ctx: Context, task: Task, reason: str) -> Task:
    """Queue timeout: a PENDING task that found no server in QUEUE_TIMEOUT."""
    now = ctx.now()
    changes: dict[str, Any] = {**_finished(ctx, TaskStatus.TIMEOUT, now), "error": reason}
    return _finish_pending(ctx, task, changes)


def backoff_ms(ctx: Context, attempt: int) -> int:
    """Exponential backoff with jitter, so retries of many tasks do not arrive together."""
    ceiling = min(ctx.config.retry_max_ms, ctx.config.retry_base_ms * 2 ** max(0, attempt - 1))
    return int(random.uniform(ceiling / 2, ceiling))


def _finished(ctx: Context, status: TaskStatus, now: int) -> dict[str, Any]:
    """The fields every move to a terminal state writes (the TTL clock starts here)."""
    return {
        "status": status,
        "updated_at": now,
        "completed_at": now,
        "deadline": None,
        "expires_at": ctx.expiry_s(now),
    }


def _delivery(ctx: Context, task: Task, changes: dict[str, Any]) -> WebhookDelivery | None:
    """The webhook delivery to store with this write, if it finishes a task that has one."""
    if task.webhook is None or "status" not in changes:
        return None
    return webhook_delivery.for_finish(ctx, msgspec.structs.replace(task, **changes))


def _finish_pending(ctx: Context, task: Task, changes: dict[str, Any]) -> Task:
    """A PENDING task finished (timed out or cancelled) in one write with its webhook delivery:
    it holds no slot to free."""
    finished = ctx.store.update_task(
        task.id,
        changes,
        from_status={PENDING},
        attempts=task.attempts,
        delivery=_delivery(ctx, task, changes),
    )
    ctx.events.publish(finished, task.status)
    return finished


def _release(
    ctx: Context, task: Task, changes: dict[str, Any], counters: dict[str, int], values: dict[str, Any]
) -> Task:
    released = ctx.store.release_task(
        task, changes, server_counters=counters, server_values=values, delivery=_delivery(ctx, task, changes)
    )
    if task.server_id is not None:
        ctx.fleet.adjust(task.server_id, -1, **values)
    ctx.events.publish(released, task.status)
    ctx.queue.capacity_changed()
    return released


def retry_task(ctx: Context, principal: Principal, task_id: str) -> Task:
    task = auth.owned_task(principal, ctx.store.get_task(task_id), task_id)
    for _ in range(_CAS_ROUNDS):
        if task.status not in states.RETRYABLE:
            raise ConflictError(f"Cannot retry a task that is {task.status.value}")
        now = ctx.now()
        changes: dict[str, Any] = {
            "status": PENDING,
            "attempt_limit": task.attempts + ctx.config.max_attempts,
            "retries": task.retries + 1,
            "queued_at": now,
            "updated_at": now,
            "not_before": 0,
            "progress": 0,
            "server_id": None,
            "failed_servers": [],
            "result": None,
            "error": None,
            "message": None,
            "started_at": None,
            "completed_at": None,
            "deadline": None,
            "expires_at": None,
        }
        try:
            retried = ctx.store.update_task(
                task.id,
                changes,
                from_status=states.sources(PENDING, states.RETRYABLE),
                attempts=task.attempts,
                # A retry read before another retry and a cancel would otherwise win from
                # the CANCELLED that cancel made, writing a stale retry count.
                retries=task.retries,
            )
        except StaleWriteError as exc:
            task = auth.owned_task(principal, _current(exc), task_id)
            continue
        ctx.events.publish(retried, task.status)
        enqueue_safely(ctx.queue, retried.id, snapshot=retried)
        return retried
    raise ConflictError("Task changed while retrying; try again")


def cancel_task(ctx: Context, principal: Principal, task_id: str) -> Task:
    """Cancel a PENDING or PROCESSING task; a PROCESSING one frees its slot. The backend is
    told (best effort) by the caller, which has the task as it was."""
    task = auth.owned_task(principal, ctx.store.get_task(task_id), task_id)
    for _ in range(_CAS_ROUNDS):
        if task.status not in states.CANCELLABLE:
            raise ConflictError(f"Cannot cancel a task that is {task.status.value}")
        now = ctx.now()
        changes: dict[str, Any] = {
            **_finished(ctx, TaskStatus.CANCELLED, now),
            "error": "Cancelled by " + principal.sub,
        }
        try:
            if task.status is PROCESSING:
                changes["history"] = attempts.closed(task, now, attempts.CANCELLED, changes["error"])
            if task.status is PENDING:
                return _finish_pending(ctx, task, changes)
            return _release(ctx, task, changes, {}, {})
        except StaleWriteError as exc:
            task = auth.owned_task(principal, _current(exc), task_id)
    raise ConflictError("Task changed while cancelling; try again")


def _current(exc: StaleWriteError) -> Task | None:
    return exc.current if isinstance(exc.current, Task) else None


def _not_processing(task: Task) -> str:
    if task.status.is_terminal:
        return f"Task is already {task.status.value}"
    return f"Task is {task.status.value}, not PROCESSING"

"""Task services: what the task routes do, as plain functions over a Context."""

from __future__ import annotations

import logging
from typing import Any

from core import auth, states
from core.auth import Principal
from core.context import Context
from core.errors import ConflictError, NotFoundError, StaleWriteError
from core.ids import new_task_id
from core.models import Task, TaskStatus
from core.schemas import CreateTask, UpdateTask
from core.urls import check_url

log = logging.getLogger(__name__)

PENDING, PROCESSING = TaskStatus.PENDING, TaskStatus.PROCESSING
# A lost race on one task is retried this many times before the caller is told to retry.
_CAS_ROUNDS = 5


def create_task(ctx: Context, principal: Principal, body: CreateTask) -> Task:
    auth.require_any(principal, auth.USER, auth.ADMIN)
    if body.webhook is not None:
        check_url(body.webhook, "webhook")
    now = ctx.now()
    task = Task(
        id=new_task_id(),
        owner=principal.sub,
        type=body.type,
        priority=body.priority,
        payload=body.payload,
        capabilities=sorted(set(body.capabilities)),
        is_async=body.is_async,
        timeout_ms=body.timeout,
        webhook=body.webhook,
        attempt_limit=ctx.config.max_attempts,
        created_at=now,
        updated_at=now,
        queued_at=now,
    )
    ctx.store.put_task(task)
    _enqueue(ctx, task)
    return task


def get_task(ctx: Context, principal: Principal, task_id: str) -> Task:
    return auth.visible_task(principal, ctx.store.get_task(task_id), task_id)


def report(ctx: Context, principal: Principal, task_id: str, body: UpdateTask) -> Task:
    """A backend's callback (PUT): progress on a PROCESSING task, or its outcome."""
    task = ctx.store.get_task(task_id)
    if task is None:
        raise NotFoundError(f"Task not found: {task_id}")
    auth.check_callback(principal, task)
    if task.status is not PROCESSING:
        raise ConflictError(_not_processing(task))
    now = ctx.now()
    status = TaskStatus(body.status) if body.status else PROCESSING
    try:
        if status is PROCESSING:
            changes: dict[str, Any] = {"updated_at": now}
            if body.progress is not None:
                changes["progress"] = body.progress
            if body.message is not None:
                changes["message"] = body.message
            return ctx.store.update_task(
                task.id,
                changes,
                from_status={PROCESSING},
                attempts=task.attempts,
                server_id=task.server_id,
            )
        finished = finish(
            ctx,
            task,
            status,
            result=body.result,
            error=body.error,
            message=body.message,
            progress=body.progress,
        )
    except StaleWriteError as exc:
        current = exc.current if isinstance(exc.current, Task) else None
        raise ConflictError(_not_processing(current) if current else f"Task not found: {task_id}") from None
    return finished


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
    """Move a PROCESSING task to a terminal state and free its slot (one atomic write)."""
    now = ctx.now()
    succeeded = status is TaskStatus.COMPLETED
    changes: dict[str, Any] = {
        "status": status,
        "updated_at": now,
        "completed_at": now,
        "deadline": None,
        "expires_at": ctx.expiry_s(now),
        "progress": 100 if succeeded else (task.progress if progress is None else progress),
    }
    if succeeded:
        changes["result"] = result
    else:
        changes["error"] = error if error is not None else (message or f"Task {status.value.lower()}")
    if message is not None:
        changes["message"] = message
    elapsed = max(0, now - (task.started_at or now))
    counters = {
        "tasks_processed": 1,
        "success_count" if succeeded else "failure_count": 1,
        "processing_ms_total": elapsed,
    }
    released = ctx.store.release_task(task, changes, server_counters=counters)
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
            "result": None,
            "error": None,
            "message": None,
            "started_at": None,
            "completed_at": None,
            "deadline": None,
            "expires_at": None,
        }
        try:
            task = ctx.store.update_task(
                task.id,
                changes,
                from_status=states.sources(PENDING, states.RETRYABLE),
                attempts=task.attempts,
            )
        except StaleWriteError as exc:
            task = auth.owned_task(principal, _current(exc), task_id)
            continue
        _enqueue(ctx, task)
        return task
    raise ConflictError("Task changed while retrying; try again")


def cancel_task(ctx: Context, principal: Principal, task_id: str) -> Task:
    task = auth.owned_task(principal, ctx.store.get_task(task_id), task_id)
    for _ in range(_CAS_ROUNDS):
        if task.status not in states.CANCELLABLE:
            raise ConflictError(f"Cannot cancel a task that is {task.status.value}")
        now = ctx.now()
        changes: dict[str, Any] = {
            "status": TaskStatus.CANCELLED,
            "updated_at": now,
            "completed_at": now,
            "deadline": None,
            "expires_at": ctx.expiry_s(now),
            "error": "Cancelled by " + principal.sub,
        }
        try:
            if task.status is PENDING:
                return ctx.store.update_task(task.id, changes, from_status={PENDING}, attempts=task.attempts)
            cancelled = ctx.store.release_task(task, changes)
        except StaleWriteError as exc:
            task = auth.owned_task(principal, _current(exc), task_id)
            continue
        ctx.queue.capacity_changed()
        return cancelled
    raise ConflictError("Task changed while cancelling; try again")


def _current(exc: StaleWriteError) -> Task | None:
    return exc.current if isinstance(exc.current, Task) else None


def _not_processing(task: Task) -> str:
    if task.status.is_terminal:
        return f"Task is already {task.status.value}"
    return f"Task is {task.status.value}, not PROCESSING"


def _enqueue(ctx: Context, task: Task) -> None:
    # The task is stored: if the message is lost, the sweeper re-enqueues it.
    try:
        ctx.queue.enqueue(task.id)
    except Exception:
        log.exception("enqueue failed; the sweeper will re-enqueue", extra={"task_id": task.id})

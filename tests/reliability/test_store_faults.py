"""Store faults on the AWS path: DynamoDB throttling and transient errors (and SQS errors)
injected at every step of create, dispatch and completion.

Each request either succeeds or fails with a 503 that says to retry (`Retry-After`, the
documented error body), never a 500; a dispatch message that hit a fault is reported failed
(SQS delivers it again); and once the faults stop, the sweeper and the redelivered messages
repair whatever was left half done: every task created ends COMPLETED, no attempt reached the
backend twice, no slot is left taken.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from core.domain.models import TaskStatus
from core.errors import UnavailableError
from core.services import sweeper
from tests.e2e.harness import Reply, unique
from tests.support.waiting import eventually

from .aws_stack import BUSY_CODES, RecordingBackend, Stack, recording_backend, register, stack
from .conftest import Scale
from .proof import FIGURES_DIR, records

__all__ = ["recording_backend", "stack"]

# Every operation the three steps make, and which calls of each to fail.
DYNAMODB_OPERATIONS = ("GetItem", "PutItem", "UpdateItem", "Query", "TransactWriteItems", "BatchGetItem")
REPAIR_TIMEOUT_S = 30


def assert_retryable(reply: Reply) -> None:
    """200, or the documented 503 with a retry hint; never a 500."""
    if reply.status_code == 200:
        return
    details = reply.error(503, "Service unavailable")
    assert "retry" in details.lower(), details
    assert reply.headers.get("retry-after", "").isdigit(), dict(reply.headers)


def create_until_accepted(stack: Stack, owner: str, body: dict[str, Any]) -> list[int]:
    """A client that retries on 503, as the hint says; the statuses it saw."""
    seen = []
    for _ in range(5):
        reply = stack.api.post("/api/task", json=body, token=owner)
        assert_retryable(reply)
        seen.append(reply.status_code)
        if reply.status_code == 200:
            return seen
    pytest.fail(f"POST /api/task never accepted: {seen}")


def dispatch_all(stack: Stack) -> list[BaseException]:
    """Deliver what is on the queue; a record that failed is delivered again (SQS would)."""
    failures: list[BaseException] = []
    for message in stack.messages():
        for _ in range(3):
            error = stack.deliver(message)
            if error is None:
                break
            assert isinstance(error, UnavailableError), repr(error)
            failures.append(error)
    return failures


def repair(stack: Stack, owner: str) -> list[Any]:
    """Faults over: sweeps and redelivered messages until every task of `owner` is done."""

    def repaired(tasks: list[Any]) -> bool:
        return bool(tasks) and all(task.status.is_terminal for task in tasks)

    def repair_round() -> list[Any]:
        """The tasks as they stand; a sweep and the redelivered messages if not all are done."""
        stack.faults.clear()
        tasks = stack.store.tasks_by_owner(owner, limit=1000)
        if not repaired(tasks):
            sweeper.sweep(stack.ctx)
            assert dispatch_all(stack) == []
        return tasks

    return eventually(
        repair_round, repaired, timeout=REPAIR_TIMEOUT_S, what="every task repaired", interval=0.2
    )


def test_faults_at_every_step_of_create_dispatch_and_completion_are_retryable_and_repaired(
    stack: Stack, recording_backend: RecordingBackend, scale: Scale
) -> None:
    backend = recording_backend.backend
    register(stack, backend, max_concurrent=100)
    owner_sub = unique("owner")
    owner = stack.api.token("user", owner_sub)
    body = {"type": "fault-test", "priority": 1, "payload": {}, "timeout": 1000}
    statuses: list[int] = []
    dispatch_failures = 0
    codes = itertools.cycle(BUSY_CODES)
    nth_calls = range(1, 7 if scale.long else 3)
    plan = [(op, nth) for op in DYNAMODB_OPERATIONS for nth in nth_calls]
    plan += [("SendMessage", 1)]
    for operation, nth in plan:
        # A dispatch's Query is its read of the fleet, which the container caches for
        # fleet_cache_ms (1 s): each step starts from a cold view, so the step meets its armed
        # Query however fast the previous step ran (a warm view skipped it, and the fault
        # was cleared unseen).
        stack.ctx.fleet.invalidate()
        # GIVEN the nth call of one operation, from here on, fails once
        stack.faults.arm(operation, nth, next(codes))
        # WHEN a task is created and its message dispatched (the backend answers inline)
        statuses += create_until_accepted(stack, owner, body)
        if operation != "SendMessage":
            dispatch_failures += len(dispatch_all(stack))
        # else the task's message was lost, and nothing else is delivered: every dispatch message
        # runs the scheduler, so a message of an earlier step whose delay ended now (a backoff)
        # would start the task, and the sweeper's repair of a lost message would go unexercised
        stack.faults.clear()

    # THEN faults were injected at each operation and surfaced only as retryable errors
    injected = {operation for operation, _ in stack.faults.injected}
    # (a create is one transaction with its owner queue's count: no PutItem on this path)
    assert injected >= {"Query", "TransactWriteItems", "SendMessage"}, injected
    assert 503 in statuses and dispatch_failures > 0, (statuses, dispatch_failures)

    # ... and once they stop, every task created ends COMPLETED, each attempt sent once
    half_done = [t for t in stack.store.tasks_by_owner(owner_sub, limit=1000) if not t.status.is_terminal]
    finals = repair(stack, owner_sub)
    assert len(finals) >= len(plan)
    assert {task.status for task in finals} == {TaskStatus.COMPLETED}, [(t.id, t.status) for t in finals]
    mine = {task.id: task for task in finals}
    sent = [(r["task"], r["attempt"]) for r in records(recording_backend.record_dir) if r["task"] in mine]
    assert len(sent) == len(set(sent)), sorted(sent)
    assert all(1 <= attempt <= mine[task_id].attempts for task_id, attempt in sent)
    server = stack.store.get_server(backend.server_id)
    assert server is not None and server.active_tasks == 0
    figures = {
        "faults_injected": len(stack.faults.injected),
        "operations": sorted(injected),
        "requests_503": statuses.count(503),
        "dispatch_records_failed": dispatch_failures,
        "tasks": len(finals),
        "half_done_before_repair": len(half_done),
        "tasks_retried_by_sweeper": sum(task.attempts > 1 for task in finals),
        "duplicate_attempts": len(sent) - len(set(sent)),
        "leaked_slots": server.active_tasks,
    }
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    (FIGURES_DIR / "store_faults.json").write_text(json.dumps(figures, indent=2))
    assert half_done, "no fault left a step half done: the repair was not exercised"


def test_a_callback_that_meets_a_fault_is_503_and_succeeds_when_retried(stack: Stack) -> None:
    api = stack.api
    owner = api.user()
    for operation, nth in itertools.product(("Query", "TransactWriteItems", "UpdateItem"), (1, 2)):
        task_id, server_id, _ = api.processing_task(owner)
        token = api.callback(server_id, task_id, 1)
        stack.faults.arm(operation, nth, "ThrottlingException")
        first = api.put(f"/api/task/{task_id}", json={"status": "COMPLETED", "result": {"n": 1}}, token=token)
        assert_retryable(first)
        stack.faults.clear()
        if first.status_code == 503:
            # The backend retries as told; the write either never happened or is reported
            again = api.put(
                f"/api/task/{task_id}", json={"status": "COMPLETED", "result": {"n": 1}}, token=token
            )
            assert again.status_code in (200, 409), again.text
        task = stack.store.get_task(task_id)
        assert task is not None and task.status is TaskStatus.COMPLETED, (operation, nth, task)
        server = stack.store.get_server(server_id)
        assert server is not None and server.active_tasks == 0

"""Races on one task through the services, on every store: 50 callers released together
(completion and failure callbacks, progress, cancels and retries) on a PROCESSING task.

Every caller either wins its transition or is told why not (409; never a 5xx, never a silent
loss). The writes that won form one path: PROCESSING -> exactly one terminal state, then any
number of (retry -> PENDING, cancel -> CANCELLED) pairs; the slot is freed exactly once and
the final task agrees with that path.
"""

from __future__ import annotations

import threading
from collections import Counter

from core.config import Config
from core.domain import auth
from core.domain.models import Task, TaskStatus
from core.domain.schemas import UpdateTask
from core.errors import ConflictError
from core.local.events import LocalEvents
from core.local.queue import CallbackQueue
from core.ports.storage import Store
from core.services import tasks
from core.services.context import Context
from tests.contract.factories import (
    active_tasks,
    claim_changes,
    put_online_server,
    put_pending,
    run_concurrently,
)

from .conftest import Scale

SECRET = "races-secret-" + "r" * 40
TERMINAL = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}


def context(store: Store) -> tuple[Context, list[tuple[TaskStatus | None, TaskStatus]]]:
    """A Context on `store` whose every task write is recorded as (previous, new)."""
    events = LocalEvents()
    written: list[tuple[TaskStatus | None, TaskStatus]] = []
    lock = threading.Lock()

    def record(task: Task, previous: TaskStatus | None) -> None:
        with lock:
            written.append((previous, task.status))

    events.listeners.append(record)
    ctx = Context(
        store=store, queue=CallbackQueue(), config=Config.from_env({"JWT_SECRET": SECRET}), events=events
    )
    return ctx, written


def test_fifty_callbacks_cancels_and_retries_leave_one_winner_per_transition(
    store: Store, scale: Scale
) -> None:
    ctx, written = context(store)
    for _round in range(2 if not scale.long else 10):
        written.clear()
        race_once(ctx, store, written, scale.racers)


def race_once(
    ctx: Context, store: Store, written: list[tuple[TaskStatus | None, TaskStatus]], n: int
) -> None:
    # GIVEN a task PROCESSING (attempt 1) on a server, its slot taken
    server = put_online_server(store, max_concurrent=1)
    pending = put_pending(store, owner="alice")
    task = store.claim_task(pending, claim_changes(pending, server.id))
    assert task.attempts == 1 and active_tasks(store, server.id) == 1
    backend = auth.Principal(
        sub=f"server:{server.id}",
        roles=frozenset({auth.SERVICE}),
        server_id=server.id,
        task_id=task.id,
        attempt=1,
    )
    owner = auth.Principal(sub="alice", roles=frozenset({auth.USER}))

    def caller(i: int) -> tuple[str, Task]:
        kind = ("complete", "fail", "cancel", "retry", "progress")[i % 5]
        if kind == "complete":
            return kind, tasks.report(ctx, backend, task.id, UpdateTask(status="COMPLETED", result={"by": i}))
        if kind == "fail":
            return kind, tasks.report(ctx, backend, task.id, UpdateTask(status="FAILED", error=f"by {i}"))
        if kind == "progress":
            return kind, tasks.report(ctx, backend, task.id, UpdateTask(progress=i % 100))
        if kind == "cancel":
            return kind, tasks.cancel_task(ctx, owner, task.id)
        return kind, tasks.retry_task(ctx, owner, task.id)

    # WHEN all of them run at once
    outcomes = run_concurrently(n, caller)

    # THEN everyone who lost was told so with a conflict, nothing else
    errors = [o.error for o in outcomes if o.error is not None]
    assert all(isinstance(e, ConflictError) for e in errors), [repr(e) for e in errors]
    wins: Counter[str] = Counter(o.value[0] for o in outcomes if o.error is None)

    # ... exactly one write took it out of PROCESSING: a completion, a failure or a cancel
    moves = Counter((before, after) for before, after in written if before is not after)
    from_processing = [m for m in moves.elements() if m[0] is TaskStatus.PROCESSING]
    assert len(from_processing) == 1, moves
    first = from_processing[0][1]
    assert first in TERMINAL, moves
    # ... then retries and cancels alternated: each retry won from a terminal state, each
    # later cancel from the PENDING a retry made
    retried = sum(count for (_, after), count in moves.items() if after is TaskStatus.PENDING)
    cancelled_pending = moves[(TaskStatus.PENDING, TaskStatus.CANCELLED)]
    assert retried == wins["retry"], (moves, wins)
    assert retried - cancelled_pending in (0, 1), moves
    assert wins["complete"] + wins["fail"] == (first in {TaskStatus.COMPLETED, TaskStatus.FAILED})
    assert wins["cancel"] == cancelled_pending + (first is TaskStatus.CANCELLED)

    # ... and the stored task agrees with that path (its retry count too); the slot was
    # freed once
    final = store.get_task(task.id)
    assert final is not None
    if retried > cancelled_pending:
        expected = TaskStatus.PENDING
    else:
        expected = TaskStatus.CANCELLED if retried else first
    assert final.status is expected, (final.status, moves)
    assert (final.retries, final.attempts) == (retried, 1)
    assert active_tasks(store, server.id) == 0
    if final.status is TaskStatus.COMPLETED:
        assert final.result["by"] % 5 == 0 and final.progress == 100
    if final.status is not TaskStatus.PENDING:
        assert final.completed_at is not None

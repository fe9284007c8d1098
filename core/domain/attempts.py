"""A task's history: one entry per attempt, opened by the claim and closed by the release, in
the same conditional writes (so it can never disagree with `attempts`)."""

from __future__ import annotations

from typing import Any

import msgspec

from core.domain.models import AttemptRecord, Task

# The newest entries kept: a task retried without end must not outgrow its item (400 KB in
# DynamoDB); `attempts` still counts every one.
MAX_ENTRIES = 100

COMPLETED = "completed"
FAILED = "failed"
TIMEOUT = "timeout"
CANCELLED = "cancelled"


def opened(task: Task, server_id: str, now: int) -> list[AttemptRecord]:
    """The history once `task` is claimed on `server_id` for its next attempt."""
    entry = AttemptRecord(attempt=task.attempts + 1, server_id=server_id, started_at=now)
    return [*task.history, entry][-MAX_ENTRIES:]


def closed(task: Task, now: int, outcome: str, error: Any = None) -> list[AttemptRecord]:
    """The history once the running attempt ends with `outcome`."""
    history = list(task.history)
    if history and history[-1].attempt == task.attempts and history[-1].ended_at is None:
        history[-1] = msgspec.structs.replace(history[-1], ended_at=now, outcome=outcome, error=error)
    return history


def given_back(task: Task) -> list[AttemptRecord]:
    """The history once the running attempt is undone (the backend answered busy)."""
    history = list(task.history)
    if history and history[-1].attempt == task.attempts and history[-1].ended_at is None:
        history.pop()
    return history

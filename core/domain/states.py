"""The task state machine: every transition docs/API.md (Task states) allows, and nothing else.

Stores enforce these with conditional writes; services name the transition they make and
the store refuses it if the task moved on in the meantime.
"""

from __future__ import annotations

from core.domain.models import TaskStatus

P, R = TaskStatus.PENDING, TaskStatus.PROCESSING
C, F, T, X = TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED

TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # dispatched; cancelled while queued; queue timeout
    P: frozenset({R, X, T}),
    # progress; back to the queue (failed attempt, busy, timeout with attempts left, server
    # gone); finished; cancelled
    R: frozenset({R, P, C, F, T, X}),
    C: frozenset(),
    # retry, with a fresh budget of attempts
    F: frozenset({P}),
    T: frozenset({P}),
    X: frozenset({P}),
}

RETRYABLE = frozenset({F, T, X})
CANCELLABLE = frozenset({P, R})


def sources(target: TaskStatus, among: frozenset[TaskStatus] | None = None) -> frozenset[TaskStatus]:
    """The states a task may be in to move to `target` (optionally narrowed to `among`)."""
    allowed = frozenset(s for s, targets in TRANSITIONS.items() if target in targets)
    if among is None:
        return allowed
    if not among <= allowed:
        raise AssertionError(f"not transitions to {target}: {sorted(among - allowed)}")
    return among

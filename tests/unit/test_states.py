"""The task state machine allows exactly the documented transitions (docs/API.md, Task states)."""

from __future__ import annotations

import pytest

from core.domain import states
from core.domain.models import TaskStatus as S

ALLOWED = {
    (S.PENDING, S.PROCESSING),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.TIMEOUT),
    (S.PROCESSING, S.PROCESSING),
    (S.PROCESSING, S.PENDING),
    (S.PROCESSING, S.COMPLETED),
    (S.PROCESSING, S.FAILED),
    (S.PROCESSING, S.TIMEOUT),
    (S.PROCESSING, S.CANCELLED),
    (S.FAILED, S.PENDING),
    (S.TIMEOUT, S.PENDING),
    (S.CANCELLED, S.PENDING),
}


def test_exactly_the_designed_transitions() -> None:
    table = {(a, b) for a, targets in states.TRANSITIONS.items() for b in targets}
    assert table == ALLOWED


def test_completed_is_final() -> None:
    assert states.TRANSITIONS[S.COMPLETED] == frozenset()


def test_sources_narrowing_must_stay_within_the_table() -> None:
    assert states.sources(S.PENDING, states.RETRYABLE) == states.RETRYABLE
    with pytest.raises(AssertionError):
        states.sources(S.PENDING, frozenset({S.COMPLETED}))

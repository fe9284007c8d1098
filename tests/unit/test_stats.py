"""Statistics counting: which counters one task write adds to, bucketed by UTC hour and day."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import pytest

from core.domain.models import Endpoints, Server, Task, TaskStatus
from core.errors import ValidationError
from core.services import stats
from handlers.metrics import exposition

PENDING, PROCESSING = TaskStatus.PENDING, TaskStatus.PROCESSING
COMPLETED, FAILED, TIMEOUT, CANCELLED = (
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.TIMEOUT,
    TaskStatus.CANCELLED,
)


def at(text: str) -> int:
    """Epoch ms of a UTC time written `2024-01-06T07:30:00.000`."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


T0 = at("2024-01-06T07:15:00")


def task(**overrides: Any) -> Task:
    base = Task(
        id="task_1",
        owner="alice",
        type="t",
        priority=1,
        payload={},
        created_at=T0,
        updated_at=T0,
        queued_at=T0,
    )
    return msgspec.structs.replace(base, **overrides)


def processing(started: int = T0 + 1_000, server: str = "gpu-1") -> Task:
    return task(status=PROCESSING, server_id=server, attempts=1, started_at=started, updated_at=started)


def finished(status: TaskStatus, done: int, **overrides: Any) -> Task:
    base = processing()
    return msgspec.structs.replace(base, status=status, completed_at=done, updated_at=done, **overrides)


# -- each transition -------------------------------------------------------------------------


def test_created_counts_in_the_hour_of_creation() -> None:
    assert stats.increments(task(), None) == {"hour:2024-01-06T07": {"created": 1}}


def test_dispatch_and_progress_count_nothing() -> None:
    assert stats.increments(processing(), PENDING) == {}
    progressed = msgspec.structs.replace(processing(), progress=40, updated_at=T0 + 5_000)
    assert stats.increments(progressed, PROCESSING) == {}


def test_completed_counts_in_its_hour_and_on_its_server_with_the_processing_time() -> None:
    done = finished(COMPLETED, at("2024-01-06T08:00:02"))
    counts = {"completed": 1, "processing_ms": at("2024-01-06T08:00:02") - (T0 + 1_000)}
    assert stats.increments(done, PROCESSING) == {
        "hour:2024-01-06T08": counts,
        "server:2024-01-06:gpu-1": counts,
    }


def test_failed_counts_in_its_hour_and_on_its_server() -> None:
    done = finished(FAILED, at("2024-01-06T07:20:00"), error="boom")
    assert stats.increments(done, PROCESSING) == {
        "hour:2024-01-06T07": {"failed": 1},
        "server:2024-01-06:gpu-1": {"failed": 1},
    }


def test_execution_timeout_counts_on_the_server_queue_timeout_does_not() -> None:
    done = finished(TIMEOUT, at("2024-01-06T09:00:00"))
    assert stats.increments(done, PROCESSING) == {
        "hour:2024-01-06T09": {"timed_out": 1},
        "server:2024-01-06:gpu-1": {"timed_out": 1},
    }
    never_ran = task(
        status=TIMEOUT, completed_at=at("2024-01-06T08:15:00"), updated_at=at("2024-01-06T08:15:00")
    )
    assert stats.increments(never_ran, PENDING) == {"hour:2024-01-06T08": {"timed_out": 1}}


def test_cancelled_counts_in_its_hour_but_not_on_the_server() -> None:
    while_processing = finished(CANCELLED, at("2024-01-06T07:40:00"))
    assert stats.increments(while_processing, PROCESSING) == {"hour:2024-01-06T07": {"cancelled": 1}}
    while_pending = task(status=CANCELLED, completed_at=at("2024-01-06T07:41:00"))
    assert stats.increments(while_pending, PENDING) == {"hour:2024-01-06T07": {"cancelled": 1}}


@pytest.mark.parametrize("previous", [FAILED, TIMEOUT, CANCELLED])
def test_back_to_pending_from_a_final_state_is_a_retry(previous: TaskStatus) -> None:
    retried_at = at("2024-01-06T10:05:00")
    retried = task(
        status=PENDING, retries=1, attempts=1, attempt_limit=4, queued_at=retried_at, updated_at=retried_at
    )
    assert stats.increments(retried, previous) == {"hour:2024-01-06T10": {"retried": 1}}


def test_requeue_after_a_failed_attempt_is_not_a_retry() -> None:
    requeued_at = T0 + 60_000
    requeued = task(
        status=PENDING,
        attempts=1,
        previous_server_id="gpu-1",
        error="connection refused",
        queued_at=requeued_at,
        updated_at=requeued_at,
    )
    assert stats.increments(requeued, PROCESSING) == {}


def test_a_write_that_keeps_a_final_status_counts_nothing() -> None:
    done = finished(COMPLETED, T0 + 2_000)
    assert stats.increments(done, COMPLETED) == {}


# -- UTC buckets -----------------------------------------------------------------------------


def test_buckets_are_utc_hours_and_days_across_midnight() -> None:
    before, after = at("2024-01-06T23:59:59.999"), at("2024-01-07T00:00:00")
    assert stats.increments(task(created_at=before), None) == {"hour:2024-01-06T23": {"created": 1}}
    assert stats.increments(task(created_at=after), None) == {"hour:2024-01-07T00": {"created": 1}}


def test_a_task_started_before_midnight_and_completed_after_counts_on_the_day_it_completed() -> None:
    started, done = at("2024-01-06T23:50:00"), at("2024-01-07T00:10:00")
    completed = msgspec.structs.replace(
        processing(started), status=COMPLETED, completed_at=done, updated_at=done
    )
    assert stats.increments(completed, PROCESSING) == {
        "hour:2024-01-07T00": {"completed": 1, "processing_ms": 20 * 60_000},
        "server:2024-01-07:gpu-1": {"completed": 1, "processing_ms": 20 * 60_000},
    }


def test_hour_keys_of_a_day_are_the_keys_writes_use() -> None:
    keys = stats.hour_keys(date(2024, 1, 6))
    assert len(keys) == 24
    assert keys[0] == stats.hour_key(at("2024-01-06T00:00:00"))
    assert keys[23] == stats.hour_key(at("2024-01-06T23:59:59.999"))


def test_counters_are_kept_35_days() -> None:
    assert stats.expiry_s(T0) == T0 // 1000 + 35 * 86_400


# -- merge -----------------------------------------------------------------------------------


def test_merge_sums_many_writes_into_one_increment_per_key() -> None:
    writes = [
        stats.increments(task(id="a"), None),
        stats.increments(task(id="b"), None),
        stats.increments(finished(COMPLETED, T0 + 3_000), PROCESSING),
        stats.increments(finished(FAILED, T0 + 4_000), PROCESSING),
        stats.increments(processing(), PENDING),
    ]
    assert stats.merge(writes) == {
        "hour:2024-01-06T07": {"created": 2, "completed": 1, "processing_ms": 2_000, "failed": 1},
        "server:2024-01-06:gpu-1": {"completed": 1, "processing_ms": 2_000, "failed": 1},
    }
    assert stats.merge([]) == {}


# -- ?date= ----------------------------------------------------------------------------------


def test_date_defaults_to_today_in_utc() -> None:
    assert stats.parse_day(None, at("2024-01-06T23:59:59")) == date(2024, 1, 6)
    assert stats.parse_day("2024-02-29", 0) == date(2024, 2, 29)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-02-30",
        "2023-02-29",
        "2024-1-6",
        "2024-01-06T00",
        "06-01-2024",
        "today",
        "\uff12\uff10\uff12\uff14-01-06",
    ],
)
def test_a_malformed_or_impossible_date_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match=r"^Invalid query parameter date: "):
        stats.parse_day(text, 0)


# -- /metrics --------------------------------------------------------------------------------

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"\})? \S+$')


def test_histogram_buckets_are_cumulative_with_inclusive_bounds() -> None:
    histogram = stats.Histogram([0.1, 1])
    for value in (0.05, 0.1, 0.5, 3):
        histogram.observe(value)
    assert histogram.buckets() == [(0.1, 2), (1, 3), (float("inf"), 4)]
    assert histogram.sum == pytest.approx(3.65)


def test_exposition_is_prometheus_text() -> None:
    server = Server(
        id="gpu-1",
        name="g",
        endpoints=Endpoints(predict="http://p", health="http://h"),
        registered_at=0,
        active_tasks=2,
        max_concurrent=4,
    )
    gauges = stats.Gauges(
        pending=3, processing=2, finished_today={"COMPLETED": 5, "FAILED": 1}, servers=[server]
    )
    histogram = stats.Histogram(stats.LATENCY_BUCKETS_S)
    histogram.observe(0.2)
    text = exposition(gauges, histogram)
    assert text.endswith("\n")
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert all(SAMPLE.match(line) for line in samples), samples
    assert {
        'taskgate_tasks{status="PENDING"} 3',
        'taskgate_tasks{status="PROCESSING"} 2',
        'taskgate_tasks_finished_today{status="COMPLETED"} 5',
        "taskgate_queue_depth 3",
        'taskgate_server_active_tasks{server="gpu-1"} 2',
        'taskgate_server_max_concurrent{server="gpu-1"} 4',
        'taskgate_dispatch_latency_seconds_bucket{le="0.1"} 0',
        'taskgate_dispatch_latency_seconds_bucket{le="0.25"} 1',
        'taskgate_dispatch_latency_seconds_bucket{le="+Inf"} 1',
        "taskgate_dispatch_latency_seconds_count 1",
    } <= set(samples)
    assert "# TYPE taskgate_dispatch_latency_seconds histogram" in text
    assert "taskgate_dispatch_latency_seconds" not in exposition(gauges, None)

"""The clients' waiting steps without I/O (taskgate/_waiting.py): what `Client` and
`AsyncClient` both do between their requests, driven here by hand with a fake clock."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from taskgate._waiting import FIRST_PAUSE, LAST_PAUSE, Polling, Reading, deliver
from taskgate.errors import RateLimited, WaitTimeout
from taskgate.models import Task, TaskStatus
from taskgate.streaming import READ_TIMEOUT_S, DoneEvent, OutputEvent, StatusEvent

TASK = {
    "id": "task_1",
    "type": "demo",
    "priority": 1,
    "status": "PROCESSING",
    "progress": 10,
    "serverId": "s1",
    "result": None,
    "error": None,
    "attempts": 1,
    "createdAt": 1,
    "updatedAt": 1,
}


def task(**changes: Any) -> Task:
    return msgspec.json.decode(msgspec.json.encode({**TASK, **changes}), type=Task)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr("taskgate._waiting.time.monotonic", lambda: now[0])
    return now


def test_polling_reports_each_change_once_and_stops_at_a_finished_task(clock: list[float]) -> None:
    seen: list[tuple[str, int]] = []
    polling = Polling(None, lambda t: seen.append((t.status.value, t.progress)))
    pauses = [polling.read(task()), polling.read(task()), polling.read(task(progress=50))]
    assert polling.read(task(status="COMPLETED", progress=100)) is None
    assert seen == [("PROCESSING", 10), ("PROCESSING", 50), ("COMPLETED", 100)]
    assert pauses[0] == FIRST_PAUSE and pauses == sorted(pauses) and pauses[-1] > FIRST_PAUSE


def test_polling_pauses_no_longer_than_a_second_nor_past_the_deadline(clock: list[float]) -> None:
    polling = Polling(10.0, None)
    pauses = []
    for _ in range(10):  # about 6 s of pauses
        pause = polling.read(task())
        assert pause is not None
        pauses.append(pause)
        clock[0] += pause
    assert max(pauses) == LAST_PAUSE
    clock[0] = 109.75  # a quarter of a second left
    assert polling.read(task()) == pytest.approx(0.25)
    clock[0] = 110.0
    with pytest.raises(WaitTimeout) as caught:
        polling.read(task())
    assert caught.value.task.progress == 10 and caught.value.timeout == 10.0


def test_a_rate_limit_is_waited_out_only_when_it_ends_before_the_deadline(clock: list[float]) -> None:
    polling = Polling(5.0, None)
    assert polling.rate_limited(RateLimited(429, "Too many requests", "x", retry_after=3.0)) == 3.0
    assert polling.rate_limited(RateLimited(429, "Too many requests", "x")) == LAST_PAUSE
    too_long = RateLimited(429, "Too many requests", "x", retry_after=30.0)
    with pytest.raises(RateLimited) as caught:
        polling.rate_limited(too_long)
    assert caught.value is too_long


def sse_lines(name: str, data: Any, event_id: str) -> list[str]:
    return [f"id: {event_id}", f"event: {name}", f"data: {msgspec.json.encode(data).decode()}", ""]


def test_reading_resumes_from_the_last_event_and_drops_what_a_broken_response_left_half_read(
    clock: list[float],
) -> None:
    reading = Reading("task/1", None, None)
    path, headers, read_s = reading.request()
    assert path == "/api/task/task%2F1/stream" and read_s == READ_TIMEOUT_S
    assert "Last-Event-ID" not in headers
    events = [e for line in sse_lines("output", {"index": 0, "data": "a"}, "0") for e in reading.feed(line)]
    assert events == [OutputEvent(0, "a")]
    # The response breaks in the middle of the next event: its half must not join the next one.
    assert reading.feed("event: output") == [] and reading.feed('data: {"index": 1') == []

    _, headers, _ = reading.request()
    assert headers["Last-Event-ID"] == "0"
    again = [e for line in sse_lines("output", {"index": 0, "data": "a"}, "0") for e in reading.feed(line)]
    assert again == []  # a chunk seen already is not yielded twice
    done = [e for line in sse_lines("done", {**TASK, "status": "COMPLETED"}, "d") for e in reading.feed(line)]
    assert isinstance(done[0], DoneEvent) and reading.done


def test_reading_bounds_its_read_timeout_by_the_deadline_and_says_when_time_is_up(clock: list[float]) -> None:
    reading = Reading("task_1", "7", 45.0)
    assert reading.request()[2] == READ_TIMEOUT_S
    clock[0] += 40.0
    assert reading.request()[2] == pytest.approx(5.0) and not reading.up()
    clock[0] += 5.0
    assert reading.request()[2] == 0.1 and reading.up()
    assert reading.request()[1]["Last-Event-ID"] == "7"


def test_deliver_hands_each_event_to_its_callback_and_returns_the_finished_task() -> None:
    progress: list[TaskStatus] = []
    chunks: list[OutputEvent] = []
    running, finished = task(), task(status="COMPLETED", progress=100)
    assert deliver(StatusEvent(running), lambda t: progress.append(t.status), chunks.append) is None
    assert deliver(OutputEvent(0, "x"), lambda t: progress.append(t.status), chunks.append) is None
    assert deliver(DoneEvent(finished), lambda t: progress.append(t.status), chunks.append) is finished
    assert progress == [TaskStatus.PROCESSING, TaskStatus.COMPLETED] and chunks == [OutputEvent(0, "x")]
    assert deliver(OutputEvent(1, "y"), None, None) is None

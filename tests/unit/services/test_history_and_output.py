"""Per-attempt history, streamed output and its Server-Sent Events, on a real store with a fake
clock: each attempt is opened by its claim and closed by whatever ends it; chunks are limited,
numbered and refused once the task is not running; a stream is bounded where it must be and
woken by writes where it can stay open."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from core.domain.auth import SERVICE, Principal
from core.domain.models import TaskStatus
from core.domain.schemas import UpdateTask
from core.errors import ConflictError, ForbiddenError, PayloadTooLargeError, ValidationError
from core.local.events import LocalEvents
from core.services import output, tasks
from core.services.context import Context
from tests.unit.services.conftest import ADMIN_USER, ALICE, add_server, drain_all, submit
from tests.unit.services.fakes import FakeClock


def backend(task_id: str, server_id: str, attempt: int) -> Principal:
    return Principal(
        sub=f"server:{server_id}",
        roles=frozenset({SERVICE}),
        server_id=server_id,
        task_id=task_id,
        attempt=attempt,
    )


def history(ctx: Context, task_id: str) -> list[tuple[Any, ...]]:
    task = ctx.store.get_task(task_id)
    assert task is not None
    return [(h.attempt, h.server_id, h.started_at, h.ended_at, h.outcome, h.error) for h in task.history]


# -- history -----------------------------------------------------------------------------------


def test_each_attempt_is_recorded_from_claim_to_its_end(ctx: Context, clock: FakeClock) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    start = clock.now
    (first,) = drain_all(ctx)
    assert history(ctx, task.id) == [(1, "gpu-1", start, None, None, None)]

    # an attempt that failed goes back to the queue; the next one completes
    clock.advance(200)
    tasks.requeue(ctx, first.task, "HTTP 500 (attempt 1 of 3, server gpu-1)")
    clock.advance(10)
    (second,) = drain_all(ctx)
    clock.advance(300)
    tasks.finish(ctx, second.task, TaskStatus.COMPLETED, result={"ok": True})

    assert history(ctx, task.id) == [
        (1, "gpu-1", start, start + 200, "failed", "HTTP 500 (attempt 1 of 3, server gpu-1)"),
        (2, "gpu-1", start + 210, start + 510, "completed", None),
    ]


def test_a_busy_answer_leaves_no_attempt_and_a_timeout_and_a_cancel_say_so(
    ctx: Context, clock: FakeClock
) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    (claimed,) = drain_all(ctx)
    tasks.requeue(ctx, claimed.task, "busy", counts=False)
    assert history(ctx, task.id) == []

    (claimed,) = drain_all(ctx)
    clock.advance(50)
    tasks.time_out(ctx, claimed.task, "no answer within 3600000 ms (server gpu-1)")
    assert [h[4] for h in history(ctx, task.id)] == ["timeout"]

    (claimed,) = drain_all(ctx)
    tasks.cancel_task(ctx, ALICE, task.id)
    entries = history(ctx, task.id)
    assert [(h[0], h[4], h[5]) for h in entries] == [
        (1, "timeout", "no answer within 3600000 ms (server gpu-1)"),
        (2, "cancelled", "Cancelled by alice"),
    ]


# -- appending output ----------------------------------------------------------------------------


def running(ctx: Context) -> tuple[str, Principal]:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    drain_all(ctx)
    return task.id, backend(task.id, "gpu-1", 1)


def small_limits(ctx: Context, **limits: int) -> None:
    ctx.config = dataclasses.replace(ctx.config, **limits)


def test_chunks_are_numbered_and_limited_per_chunk_per_task_and_in_count(ctx: Context) -> None:
    task_id, token = running(ctx)
    small_limits(ctx, output_chunk_max_bytes=10, output_task_max_bytes=25, output_task_max_chunks=3)

    assert output.append(ctx, token, task_id, "abcdefgh").index == 0  # 10 bytes as JSON
    with pytest.raises(PayloadTooLargeError, match="chunk is 11 bytes; the limit is 10"):
        output.append(ctx, token, task_id, "abcdefghi")
    assert output.append(ctx, token, task_id, [1, 2, 3]).index == 1  # 7 bytes: 17 in all
    with pytest.raises(PayloadTooLargeError, match="would be 27 bytes"):
        output.append(ctx, token, task_id, "abcdefgh")
    assert output.append(ctx, token, task_id, 1).index == 2
    with pytest.raises(PayloadTooLargeError, match="3 output chunks; the limit is 3"):
        output.append(ctx, token, task_id, 2)
    assert [c.data for c in ctx.store.task_output(task_id)] == ["abcdefgh", [1, 2, 3], 1]


def test_output_is_refused_to_others_and_once_the_task_is_not_running(ctx: Context) -> None:
    task_id, token = running(ctx)
    with pytest.raises(ForbiddenError):
        output.append(ctx, ALICE, task_id, "mine")  # the owner is not the backend
    with pytest.raises(ConflictError, match="attempt 2"):
        output.append(ctx, backend(task_id, "gpu-1", 2), task_id, "a later attempt's token")
    output.append(ctx, ADMIN_USER, task_id, "an admin may")
    tasks.cancel_task(ctx, ALICE, task_id)
    with pytest.raises(ConflictError, match="CANCELLED"):
        output.append(ctx, token, task_id, "late")
    assert [c.data for c in ctx.store.task_output(task_id)] == ["an admin may"]


@pytest.mark.parametrize("header", ["x", "-1", "1.5", "9999999999", " 3 x"])
def test_a_last_event_id_that_is_no_chunk_index_is_refused(header: str) -> None:
    with pytest.raises(ValidationError, match="Last-Event-ID"):
        output.last_event_id(header)


def test_no_last_event_id_starts_from_the_first_chunk() -> None:
    assert (
        output.last_event_id(None) == -1 and output.last_event_id("") == -1 and output.last_event_id("7") == 7
    )


# -- the stream ----------------------------------------------------------------------------------


def parse(frames: list[bytes]) -> list[tuple[str, Any]]:
    """(event, data) per frame; ("retry", ms) and ("comment", text) for the others."""
    found: list[tuple[str, Any]] = []
    for frame in frames:
        text = frame.decode()
        if text.startswith("retry: "):
            found.append(("retry", int(text.split()[1])))
        elif text.startswith(":"):
            found.append(("comment", text))
        else:
            fields = dict(line.split(": ", 1) for line in text.strip().splitlines())
            found.append((fields["event"], json.loads(fields["data"])))
    return found


async def collect(ctx: Context, task_id: str, after: int = -1) -> list[bytes]:
    task = ctx.store.get_task(task_id)
    assert task is not None
    return [frame async for frame in output.events(ctx, task, after)]


def test_a_bounded_stream_says_retry_carries_what_there_is_and_ends(ctx: Context) -> None:
    # AWS: the base TaskEvents cannot stay open
    small_limits(ctx, stream_wait_ms=100)
    task_id, token = running(ctx)
    for data in ("a", "b"):
        output.append(ctx, token, task_id, data)

    events = parse(asyncio.run(collect(ctx, task_id, after=0)))

    assert events[0] == ("retry", output.RETRY_MS)
    assert [kind for kind, _ in events] == ["retry", "status", "output"]
    assert events[1][1]["status"] == "PROCESSING" and events[2][1] == {"index": 1, "data": "b"}


def test_a_finished_tasks_stream_is_its_output_then_done(ctx: Context) -> None:
    task_id, token = running(ctx)
    output.append(ctx, token, task_id, {"n": 0})
    tasks.report(ctx, token, task_id, UpdateTask(status="COMPLETED", result=42))

    events = parse(asyncio.run(collect(ctx, task_id)))

    assert [kind for kind, _ in events] == ["retry", "output", "done"]
    assert events[-1][1]["result"] == 42 and events[-1][1]["history"][0]["outcome"] == "completed"


def test_an_open_stream_is_woken_by_the_writes_themselves(ctx: Context) -> None:
    # One machine: LocalEvents keeps the stream open and wakes it on each write
    ctx.events = LocalEvents()
    task_id, token = running(ctx)

    async def scenario() -> list[tuple[str, Any]]:
        task = ctx.store.get_task(task_id)
        assert task is not None
        stream = output.events(ctx, task, -1)
        got = [await anext(stream)]  # the status
        # A write wakes the waiting stream at once (its keep-alive timer is 15 s away)
        output.append(ctx, token, task_id, "hello")
        got.append(await asyncio.wait_for(anext(stream), 2))
        tasks.report(ctx, token, task_id, UpdateTask(progress=50))
        got.append(await asyncio.wait_for(anext(stream), 2))
        tasks.report(ctx, token, task_id, UpdateTask(status="FAILED", error="out of memory"))
        got.append(await asyncio.wait_for(anext(stream), 2))
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(stream), 2)
        return parse([frame for frame in got])

    events = asyncio.run(scenario())
    assert [kind for kind, _ in events] == ["status", "output", "status", "done"]
    assert events[2][1]["progress"] == 50 and events[3][1]["error"] == "out of memory"


def test_an_open_stream_ends_when_the_server_stops(ctx: Context) -> None:
    ctx.events = LocalEvents()
    task_id, _ = running(ctx)

    async def scenario() -> list[bytes]:
        task = ctx.store.get_task(task_id)
        assert task is not None
        stream = output.events(ctx, task, -1)
        first = await anext(stream)
        ctx.events.close()  # what `taskgate serve` does when it starts to shut down
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(stream), 2)
        return [first]

    assert [kind for kind, _ in parse(asyncio.run(scenario()))] == ["status"]

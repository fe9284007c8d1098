"""The dispatch loop of core.services.work, driven with a scripted transport and a fake clock:
which tasks a drain starts, what each predict answer does to the task, the hand-over on BUSY,
the cancel that waits for its predict, and a store fault in the middle of a drain."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from core.domain.models import Task, TaskStatus
from core.domain.protocol import BackendRequest, Kind, Outcome
from core.errors import StaleWriteError
from core.services import tasks, work
from core.services.context import Context
from core.services.dispatch import Assignment
from tests.unit.services.conftest import ALICE, add_server, drain_all, submit
from tests.unit.services.fakes import FakeClock, RecordingQueue, RecordingTelemetry, ScriptedTransport

ACCEPTED = Outcome(Kind.ACCEPTED)
DONE = Outcome(Kind.COMPLETED, result={"image": "cat.png"})
BUSY = Outcome(Kind.BUSY, error="busy")
RETRY = Outcome(Kind.RETRY, error="HTTP 503")
FAILED = Outcome(Kind.FAILED, error="HTTP 400: bad payload")


def status(ctx: Context, task: Task) -> TaskStatus:
    current = ctx.store.get_task(task.id)
    assert current is not None
    return current.status


def slots(ctx: Context, server_id: str) -> int:
    server = ctx.store.get_server(server_id)
    assert server is not None
    return server.active_tasks


# -- drain: which tasks start now -------------------------------------------------------


def test_drain_starts_the_highest_priority_first_and_fifo_within_a_priority(
    ctx: Context, clock: FakeClock
) -> None:
    add_server(ctx, "gpu-1", max_concurrent=3)
    low = submit(ctx, priority=1)
    clock.advance(1)
    first_high = submit(ctx, priority=9)
    clock.advance(1)
    second_high = submit(ctx, priority=9)
    clock.advance(1)
    middle = submit(ctx, priority=5)

    started = drain_all(ctx)

    assert [a.task.id for a in started] == [first_high.id, second_high.id, middle.id]
    assert status(ctx, low) is TaskStatus.PENDING
    assert slots(ctx, "gpu-1") == 3


def test_drain_stops_when_the_fleet_is_full(ctx: Context) -> None:
    add_server(ctx, "gpu-1", max_concurrent=1)
    waiting = [submit(ctx) for _ in range(3)]

    started: list[Assignment] = []
    drained = work.drain(ctx, 50, started.append)

    assert len(started) == drained.started == 1
    assert [status(ctx, t) for t in waiting].count(TaskStatus.PENDING) == 2
    assert slots(ctx, "gpu-1") == 1


def test_drain_with_no_server_starts_nothing_and_changes_nothing(ctx: Context) -> None:
    task = submit(ctx)
    assert drain_all(ctx) == []
    assert status(ctx, task) is TaskStatus.PENDING


def test_drain_leaves_a_task_backing_off_and_says_when_it_is_due(ctx: Context, clock: FakeClock) -> None:
    add_server(ctx, "gpu-1", max_concurrent=2)
    task = submit(ctx)
    [assignment] = drain_all(ctx)
    tasks.requeue(ctx, assignment.task, "HTTP 503", backoff_ms=2_000)

    drained = work.drain(ctx, 50, lambda a: pytest.fail("started a task that is backing off"))
    assert drained.wake_at == clock.now + 2_000

    clock.advance(2_000)
    [again] = drain_all(ctx)
    assert again.task.id == task.id and again.task.attempts == 2


def test_drain_reads_batch_after_batch_but_no_more_than_max_batches(ctx: Context, clock: FakeClock) -> None:
    add_server(ctx, "gpu-1", max_concurrent=10)
    for _ in range(5):
        submit(ctx)
        clock.advance(1)

    assert len(drain_all(ctx, batch=2, max_batches=1)) == 2
    assert len(drain_all(ctx, batch=2)) == 3  # 2, then 1: a short batch ends the drain


def test_a_store_fault_mid_drain_still_hands_over_the_claims_already_made(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_server(ctx, "gpu-1", max_concurrent=5)
    submitted = [submit(ctx, priority=p) for p in (9, 8, 7)]
    real_claim = ctx.store.claim_task
    calls = 0

    def claim_then_fail(task: Task, changes: dict[str, Any], *, owner_limit: int = 0) -> Task:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("store unreachable")
        return real_claim(task, changes, owner_limit=owner_limit)

    monkeypatch.setattr(ctx.store, "claim_task", claim_then_fail)
    started: list[Assignment] = []
    with pytest.raises(ConnectionError):
        work.drain(ctx, 50, started.append)

    # The first claim reached `start` before the fault: its predict call is not stranded.
    assert [a.task.id for a in started] == [submitted[0].id]
    assert status(ctx, submitted[0]) is TaskStatus.PROCESSING
    assert [status(ctx, t) for t in submitted[1:]] == [TaskStatus.PENDING, TaskStatus.PENDING]


# -- execute: one predict call and what its answer does --------------------------------


def run_one(ctx: Context, transport: ScriptedTransport, **kwargs: Any) -> int | None:
    [assignment] = drain_all(ctx)
    return work.run(work.execute(ctx, assignment, **kwargs), transport)


def test_an_inline_result_completes_the_task_frees_the_slot_and_is_timed(
    ctx: Context, transport: ScriptedTransport, telemetry: RecordingTelemetry
) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    transport.script("gpu-1", DONE)

    assert run_one(ctx, transport) is None

    done = ctx.store.get_task(task.id)
    assert done is not None and done.status is TaskStatus.COMPLETED and done.result == {"image": "cat.png"}
    assert slots(ctx, "gpu-1") == 0
    assert [name for name, _ in telemetry.durations] == ["DispatchLatency"]
    assert transport.calls == [("predict", "gpu-1")]


def test_the_predict_call_carries_the_task_and_a_callback_for_this_attempt(
    ctx: Context, transport: ScriptedTransport
) -> None:
    add_server(ctx, "gpu-1", api_key="k-1")
    task = submit(ctx)
    transport.script("gpu-1", ACCEPTED)
    run_one(ctx, transport)

    [request] = transport.requests
    assert request.headers["Idempotency-Key"] == f"{task.id}:1"
    assert request.headers["Authorization"] == "Bearer k-1"
    assert f'"callback_url":"http://127.0.0.1:8787/api/task/{task.id}"'.encode() in request.body
    assert status(ctx, task) is TaskStatus.PROCESSING  # accepted: callbacks will finish it
    assert slots(ctx, "gpu-1") == 1


def test_a_permanent_failure_fails_the_task_without_a_retry(
    ctx: Context, transport: ScriptedTransport, queue: RecordingQueue
) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    transport.script("gpu-1", FAILED)
    run_one(ctx, transport)

    failed = ctx.store.get_task(task.id)
    assert failed is not None and failed.status is TaskStatus.FAILED
    assert failed.error == "HTTP 400: bad payload"
    assert queue.enqueued == [(task.id, 0)]  # the create's only: no retry was asked for


def test_a_retryable_failure_requeues_with_backoff_on_another_server_next(
    ctx: Context, transport: ScriptedTransport, queue: RecordingQueue, clock: FakeClock
) -> None:
    add_server(ctx, "gpu-1")
    add_server(ctx, "gpu-2")
    task = submit(ctx)
    [assignment] = drain_all(ctx)
    first = assignment.server.id
    transport.script(first, RETRY)
    work.run(work.execute(ctx, assignment), transport)

    requeued = ctx.store.get_task(task.id)
    assert requeued is not None and requeued.status is TaskStatus.PENDING
    assert requeued.attempts == 1 and requeued.previous_server_id == first
    assert "HTTP 503 (attempt 1 of 3" in str(requeued.error)
    backoff = requeued.not_before - clock.now
    assert 250 <= backoff <= 500  # RETRY_BASE 500 ms, jittered down to half
    assert queue.enqueued[-1] == (task.id, backoff)
    assert slots(ctx, first) == 0

    clock.advance(backoff)
    [second] = drain_all(ctx)
    assert second.server.id != first and second.task.attempts == 2


def test_the_last_attempt_failing_fails_the_task(
    ctx: Context, transport: ScriptedTransport, clock: FakeClock
) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    for _ in range(3):
        transport.script("gpu-1", RETRY)
        run_one(ctx, transport)
        clock.advance(60_000)

    failed = ctx.store.get_task(task.id)
    assert failed is not None and failed.status is TaskStatus.FAILED and failed.attempts == 3
    assert drain_all(ctx) == []


def test_busy_hands_the_task_to_the_next_server_in_the_same_job(
    ctx: Context, transport: ScriptedTransport
) -> None:
    add_server(ctx, "gpu-1")
    add_server(ctx, "gpu-2")
    task = submit(ctx)
    [assignment] = drain_all(ctx)
    first = assignment.server.id
    other = "gpu-2" if first == "gpu-1" else "gpu-1"
    transport.script(first, BUSY)
    transport.script(other, DONE)

    assert work.run(work.execute(ctx, assignment), transport) is None

    assert transport.calls == [("predict", first), ("predict", other)]
    done = ctx.store.get_task(task.id)
    assert done is not None and done.status is TaskStatus.COMPLETED
    assert done.attempts == 1  # a busy answer is not a failed attempt
    assert slots(ctx, first) == slots(ctx, other) == 0


def test_busy_everywhere_leaves_the_task_pending_and_names_the_wake_up(
    ctx: Context, transport: ScriptedTransport, clock: FakeClock
) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    transport.script("gpu-1", BUSY)

    wake_at = run_one(ctx, transport)

    assert wake_at == clock.now + ctx.config.busy_retry_ms
    waiting = ctx.store.get_task(task.id)
    assert waiting is not None and waiting.status is TaskStatus.PENDING and waiting.attempts == 0
    assert slots(ctx, "gpu-1") == 0
    assert drain_all(ctx) == []  # not before BUSY_RETRY_DELAY
    clock.advance(ctx.config.busy_retry_ms)
    assert len(drain_all(ctx)) == 1


def test_a_duplicate_drain_cannot_send_one_attempt_twice(ctx: Context) -> None:
    add_server(ctx, "gpu-1", max_concurrent=5)
    task = submit(ctx)
    stale = ctx.store.get_task(task.id)
    assert stale is not None
    assert len(drain_all(ctx)) == 1
    with pytest.raises(StaleWriteError):
        ctx.store.claim_task(stale, {"status": TaskStatus.PROCESSING, "server_id": "gpu-1", "attempts": 1})
    assert drain_all(ctx) == []
    assert slots(ctx, "gpu-1") == 1


def test_a_callback_that_wins_the_race_keeps_its_result(ctx: Context, transport: ScriptedTransport) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    [assignment] = drain_all(ctx)

    def callback_first(_: BackendRequest) -> None:
        tasks.finish(ctx, assignment.task, TaskStatus.COMPLETED, result={"from": "callback"})

    transport.during_predict = callback_first
    transport.script("gpu-1", Outcome(Kind.COMPLETED, result={"from": "reply"}))
    work.run(work.execute(ctx, assignment), transport)

    done = ctx.store.get_task(task.id)
    assert done is not None and done.result == {"from": "callback"}
    assert slots(ctx, "gpu-1") == 0


# -- the cancel that waits for its predict (one machine) --------------------------------


def test_a_cancel_during_the_predict_is_sent_after_it_and_the_cancel_stands(
    ctx: Context, transport: ScriptedTransport
) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    in_flight = work.PredictsInFlight()
    deferred: list[bool] = []

    def cancel_meanwhile(_: BackendRequest) -> None:
        tasks.cancel_task(ctx, ALICE, task.id)
        deferred.append(in_flight.defer_cancel(task.id))

    transport.during_predict = cancel_meanwhile
    transport.script("gpu-1", ACCEPTED)
    run_one(ctx, transport, in_flight=in_flight)

    assert deferred == [True]
    assert [kind for kind, _ in transport.calls] == ["predict", "cancel"]
    assert status(ctx, task) is TaskStatus.CANCELLED
    assert not in_flight.defer_cancel(task.id)  # the predict is over: a cancel goes at once


def test_a_job_closed_mid_predict_forgets_its_task(ctx: Context) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    [assignment] = drain_all(ctx)
    in_flight = work.PredictsInFlight()
    job = work.execute(ctx, assignment, in_flight)
    assert isinstance(next(job), work.Predict)
    assert in_flight.defer_cancel(task.id)

    job.close()  # the runtime stopped while the call was on the wire

    assert not in_flight.defer_cancel(task.id)
    assert status(ctx, task) is TaskStatus.PROCESSING  # the sweeper's timeout will requeue it


class AsyncScripted:
    """The async transport over a ScriptedTransport; its cancel waits on an event the test
    sets, so the test can see that the job went on without it."""

    def __init__(self, scripted: ScriptedTransport) -> None:
        self.scripted = scripted
        self.release_cancel = asyncio.Event()
        self.cancel_done = False

    async def predict(self, request: BackendRequest) -> Outcome:
        return self.scripted.predict(request)

    async def health(self, server: Any, timeout_s: float) -> tuple[bool, str | None]:
        return self.scripted.health(server, timeout_s)

    async def cancel(self, task: Task, server: Any) -> None:
        await self.release_cancel.wait()
        self.scripted.cancel(task, server)
        self.cancel_done = True

    async def send_webhook(self, request: Any) -> Any:
        return self.scripted.send_webhook(request)


def test_the_async_driver_sends_a_deferred_cancel_in_the_background(
    ctx: Context, transport: ScriptedTransport
) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    [assignment] = drain_all(ctx)
    in_flight = work.PredictsInFlight()

    def cancel_meanwhile(_: BackendRequest) -> None:
        tasks.cancel_task(ctx, ALICE, task.id)
        in_flight.defer_cancel(task.id)

    transport.during_predict = cancel_meanwhile
    transport.script("gpu-1", DONE)
    remote = AsyncScripted(transport)

    async def scenario() -> None:
        background: list[asyncio.Task[None]] = []

        def spawn(call: Coroutine[Any, Any, None]) -> None:
            background.append(asyncio.ensure_future(call))

        # Bounded: a driver that awaited the cancel would wait for the event forever.
        job = work.run_async(work.execute(ctx, assignment, in_flight), remote, spawn)
        await asyncio.wait_for(job, timeout=5)
        # The job finished while its cancel call still waits: nothing waited for the backend.
        assert len(background) == 1 and not remote.cancel_done
        remote.release_cancel.set()
        await asyncio.gather(*background)
        assert remote.cancel_done

    asyncio.run(scenario())
    assert status(ctx, task) is TaskStatus.CANCELLED
    assert [kind for kind, _ in transport.calls] == ["predict", "cancel"]


class BrokenTransport(ScriptedTransport):
    def predict(self, request: BackendRequest) -> Outcome:
        raise RuntimeError("transport bug")


def test_a_transport_that_raises_closes_the_job_and_reaches_the_caller(ctx: Context) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    [assignment] = drain_all(ctx)
    in_flight = work.PredictsInFlight()

    job = work.execute(ctx, assignment, in_flight)  # held here: only `run` can close it
    with pytest.raises(RuntimeError, match="transport bug"):
        work.run(job, BrokenTransport())

    assert not in_flight.defer_cancel(task.id)  # the job's bookkeeping was undone
    assert status(ctx, task) is TaskStatus.PROCESSING  # left to the sweeper's timeout

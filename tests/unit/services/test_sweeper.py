"""The sweeper on a real store with a fake clock: execution and queue timeouts, silent
servers, slot reconciliation and the nudge for waiting tasks, each due exactly when the
clock says and not a millisecond before."""

from __future__ import annotations

from core.domain.models import ServerStatus, TaskStatus
from core.services import servers, sweeper
from core.services.context import Context
from tests.unit.services.conftest import add_server, drain_all, submit
from tests.unit.services.fakes import FakeClock, RecordingQueue


def test_a_task_past_its_deadline_is_retried_then_timed_out(ctx: Context, clock: FakeClock) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx, timeout=1_000)
    for attempt in range(1, 4):
        [assignment] = drain_all(ctx)
        assert assignment.task.attempts == attempt
        clock.advance(999)
        assert sweeper.sweep(ctx).timed_out == 0
        clock.advance(1)
        assert sweeper.sweep(ctx).timed_out == 1  # requeued at once (no backoff) while attempts remain

    timed_out = ctx.store.get_task(task.id)
    assert timed_out is not None and timed_out.status is TaskStatus.TIMEOUT
    assert "Timed out after 1000 ms on server gpu-1 (attempt 3 of 3)" in str(timed_out.error)
    server = ctx.store.get_server("gpu-1")
    assert server is not None and server.active_tasks == 0


def test_a_task_no_server_takes_times_out_in_the_queue(ctx: Context, clock: FakeClock) -> None:
    task = submit(ctx, capabilities=["tpu"])
    clock.advance(ctx.config.queue_timeout_ms - 1)
    assert sweeper.sweep(ctx).queue_timeouts == 0
    clock.advance(1)
    assert sweeper.sweep(ctx).queue_timeouts == 1

    expired = ctx.store.get_task(task.id)
    assert expired is not None and expired.status is TaskStatus.TIMEOUT
    assert str(expired.error).startswith("No server took the task within")


def test_a_silent_server_goes_offline_and_gives_its_tasks_back(ctx: Context, clock: FakeClock) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    drain_all(ctx)
    clock.advance(ctx.config.heartbeat_timeout_ms)
    assert sweeper.sweep(ctx).silent_servers == 0
    clock.advance(1)

    report = sweeper.sweep(ctx)

    assert report.silent_servers == 1
    server = ctx.store.get_server("gpu-1")
    assert server is not None and server.status is ServerStatus.OFFLINE and server.active_tasks == 0
    requeued = ctx.store.get_task(task.id)
    assert requeued is not None and requeued.status is TaskStatus.PENDING and requeued.attempts == 1


def test_a_slot_count_off_from_the_tasks_is_reconciled_after_the_grace(
    ctx: Context, clock: FakeClock, queue: RecordingQueue
) -> None:
    add_server(ctx, "gpu-1", max_concurrent=4)
    submit(ctx)
    drain_all(ctx)
    ctx.store.set_active_tasks("gpu-1", 3, expected=1, last_claim_at=clock.now)  # drifted
    assert sweeper.sweep(ctx).slots_reconciled == 0  # a claim was just made: left alone

    clock.advance(ctx.config.reconcile_grace_ms)
    servers.record_check(ctx, "gpu-1", True)  # alive, so not silent meanwhile
    signals = queue.capacity_signals
    assert sweeper.sweep(ctx).slots_reconciled == 1

    server = ctx.store.get_server("gpu-1")
    assert server is not None and server.active_tasks == 1
    assert queue.capacity_signals > signals


def test_a_waiting_task_is_nudged_every_sweep_in_case_its_wake_up_was_lost(
    ctx: Context, queue: RecordingQueue
) -> None:
    assert sweeper.sweep(ctx).pending_nudged is False
    submit(ctx)
    signals = queue.capacity_signals
    assert sweeper.sweep(ctx).pending_nudged is True
    assert queue.capacity_signals == signals + 1

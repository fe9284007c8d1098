"""The scheduler in the cases the issue measured, on a real store with a fake clock: GIVEN a
fleet and a backlog, WHEN the dispatcher wakes up, THEN what starts is what the policy says."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.domain.models import TaskStatus
from core.local.sqlite import SqliteStore
from core.services import dispatch, scheduler, tasks
from tests.unit.scheduling_model import Fleet, follows_the_model


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(SqliteStore(":memory:"))


def started_ids(fleet: Fleet) -> list[str]:
    return [a.task.id for a in fleet.wake(follows_the_model)]


def test_unrunnable_tasks_ahead_never_hold_up_runnable_ones(fleet: Fleet) -> None:
    # GIVEN 4 idle servers with 100 slots each, and 300 tasks needing "tpu" (nobody has it),
    # queued first and at a higher priority than 25 runnable tasks
    for _ in range(4):
        fleet.add_server(["gpu"], 100)
    for _ in range(300):
        fleet.submit("batch", 9, ["tpu"])
    fleet.clock[0] += 1
    runnable = [fleet.submit("alice", 1, ["gpu"]) for _ in range(25)]
    # WHEN the dispatcher wakes up once
    started = started_ids(fleet)
    # THEN all 25 start, and no unrunnable task was even read
    assert sorted(started) == sorted(runnable)
    assert fleet.store.count_pending() == 300


def test_a_busy_capability_at_the_head_does_not_hold_up_an_idle_one(fleet: Fleet) -> None:
    busy = fleet.add_server(["video"], 1)
    fleet.add_server(["image"], 2)
    first = fleet.submit("alice", 5, ["video"])
    assert started_ids(fleet) == [first]
    # GIVEN the only video server is full and more video tasks are queued first
    for _ in range(10):
        fleet.submit("alice", 5, ["video"])
    fleet.clock[0] += 1
    images = [fleet.submit("bob", 5, ["image"]) for _ in range(2)]
    # WHEN the dispatcher wakes up, THEN the image tasks start at once
    assert sorted(started_ids(fleet)) == images
    assert fleet.store.get_server(busy) is not None


def test_a_freed_slot_goes_to_the_highest_priority_whatever_the_arrival_order(fleet: Fleet) -> None:
    fleet.add_server([], 1)
    running = fleet.submit("alice", 0, [])
    assert started_ids(fleet) == [running]
    low = [fleet.submit("alice", 1, []) for _ in range(50)]
    fleet.clock[0] += 1
    high = [fleet.submit("alice", 9, []) for _ in range(5)]
    order = []
    fleet.finish(running)
    for _ in range(7):
        (started,) = started_ids(fleet)
        order.append(started)
        fleet.finish(started)
    assert order == [*high, *low[:2]]


def test_a_light_users_task_starts_at_the_next_slot_release_whatever_the_heavy_backlog(fleet: Fleet) -> None:
    for _ in range(2):
        fleet.add_server([], 5)
    heavy = [fleet.submit("heavy", 5, []) for _ in range(1_000)]
    assert sorted(started_ids(fleet)) == heavy[:10]
    fleet.clock[0] += 1
    light = [fleet.submit("light", 5, []) for _ in range(3)]
    # The fleet is full: nothing starts until a slot is released...
    assert started_ids(fleet) == []
    fleet.finish(heavy[0])
    # ...and the first released slot goes to the light user (0 in flight against 9).
    assert started_ids(fleet) == [light[0]]
    # The light user now has 1 in flight against 9: the next releases go to it too, until even.
    fleet.finish(heavy[1])
    assert started_ids(fleet) == [light[1]]


def test_owner_limit_passes_a_full_owner_over_and_keeps_its_count_exact() -> None:
    fleet = Fleet(SqliteStore(":memory:"), owner_limit=2)
    fleet.add_server([], 10)
    alice = [fleet.submit("alice", 9, []) for _ in range(5)]
    bob = [fleet.submit("bob", 1, []) for _ in range(3)]
    started = started_ids(fleet)
    assert sorted(started) == sorted([*alice[:2], *bob[:2]])
    assert fleet.store.in_flight_by_owner() == {"alice": 2, "bob": 2}
    fleet.finish(alice[0])
    assert started_ids(fleet) == [alice[2]]


def test_the_store_refuses_a_claim_over_the_owner_limit_even_when_the_view_is_stale() -> None:
    fleet = Fleet(SqliteStore(":memory:"), owner_limit=1)
    fleet.add_server([], 10)
    first, second = fleet.submit("alice", 5, []), fleet.submit("alice", 5, [])
    assert started_ids(fleet) == [first]
    # A second dispatcher with its own (stale) counts tries the owner's next task directly.
    decision = dispatch.assign(fleet.ctx, second)
    assert isinstance(decision, dispatch.Waiting) and decision.owner_full
    current = fleet.store.get_task(second)
    assert current is not None and current.status is TaskStatus.PENDING
    assert fleet.store.in_flight_by_owner() == {"alice": 1}


def test_a_task_backing_off_holds_up_nobody_and_says_when_to_wake(fleet: Fleet) -> None:
    fleet.add_server([], 2)
    first = fleet.submit("alice", 9, [])
    assert started_ids(fleet) == [first]
    fleet.fail(first, backoff_ms=500)
    fleet.clock[0] += 1
    other = fleet.submit("bob", 1, [])
    started: list[dispatch.Assignment] = []
    round_ = scheduler.start_next(fleet.ctx, started.append)
    assert [a.task.id for a in started] == [other] and round_.started == 1
    fleet.model.start(other, started[0].server.id)
    assert round_.wake_at == fleet.model.pending[first].ready_at
    fleet.clock[0] = round_.wake_at
    assert started_ids(fleet) == [first]


def test_a_task_cancelled_after_the_round_read_it_is_skipped(fleet: Fleet) -> None:
    fleet.add_server([], 1)
    gone, next_one = fleet.submit("alice", 5, []), fleet.submit("alice", 5, [])
    stale = fleet.store.get_task(gone)
    assert stale is not None
    tasks.expire_pending(fleet.ctx, stale, "cancelled meanwhile")
    del fleet.model.pending[gone]
    assert started_ids(fleet) == [next_one]


def test_a_database_made_before_the_index_gets_it_built_by_schema_step_5(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    fleet = Fleet(SqliteStore(path))
    fleet.add_server(["gpu"], 1)
    ids = [fleet.submit(owner, 5, ["gpu"]) for owner in ("alice", "bob", "alice")]
    assert started_ids(fleet) == [ids[0]]
    fleet.store.close()
    # Make it look like a file from before (schema version 4): no queue column, no counts, no
    # triggers, no index of the scheduler's.
    conn = sqlite3.connect(path)
    for name, kind in conn.execute("SELECT name, type FROM sqlite_master WHERE sql IS NOT NULL").fetchall():
        if kind == "trigger" or name in (
            "owner_queues",
            "owners_in_flight",
            "tasks_owner_queue",
            "tasks_pending_age",
        ):
            conn.execute(f"DROP {kind.upper()} {name}")
    conn.execute("ALTER TABLE tasks DROP COLUMN queue")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    reopened = SqliteStore(path)
    assert reopened.queue_ahead(reopened.get_task(ids[2])) == 0  # type: ignore[arg-type]
    queues = {(q.queue, q.priority, q.owner): q.pending for q in reopened.owner_queues()}
    assert queues == {("gpu", 5, "alice"): 1, ("gpu", 5, "bob"): 1}
    assert reopened.in_flight_by_owner() == {"alice": 1}


def test_the_sweeper_repairs_an_owners_count_of_tasks_in_flight(fleet: Fleet) -> None:
    from core.services import sweeper

    fleet.add_server([], 4)
    ids = [fleet.submit("alice", 5, []) for _ in range(3)]
    assert sorted(started_ids(fleet)) == ids
    # GIVEN a count gone wrong (written before the counts existed, or by hand)
    assert fleet.store.set_in_flight("alice", 7, expected=3, quiet_since=fleet.clock[0])
    fleet.clock[0] += fleet.ctx.config.reconcile_grace_ms + 1
    report = sweeper.sweep(fleet.ctx)
    assert report.owner_counts_reconciled == 1
    assert fleet.store.in_flight_by_owner() == {"alice": 3}
    # A count that adds up is not recounted.
    assert sweeper.sweep(fleet.ctx).owner_counts_reconciled == 0


def test_queue_timeouts_read_only_the_tasks_that_are_due(fleet: Fleet) -> None:
    from core.services import sweeper

    due = [fleet.submit("alice", p, ["tpu"]) for p in (0, 9)]
    fleet.clock[0] += fleet.ctx.config.queue_timeout_ms
    later = [fleet.submit("alice", 5, ["tpu"]) for _ in range(20)]
    read: list[int] = []
    original = fleet.store.pending_queued_before

    def counted(cutoff: int, limit: int) -> list[object]:
        found = original(cutoff, limit)
        read.append(len(found))
        return found  # type: ignore[return-value]

    fleet.store.pending_queued_before = counted  # type: ignore[method-assign]
    report = sweeper.sweep(fleet.ctx)
    assert report.queue_timeouts == 2 and read == [2]
    for task_id in due:
        task = fleet.store.get_task(task_id)
        assert task is not None and task.status is TaskStatus.TIMEOUT
        assert "no registered server has capabilities: tpu" in str(task.error)
    assert fleet.store.count_pending() == len(later)

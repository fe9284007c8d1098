"""What the scheduler's explanations and outlier detection need of every adapter: the queue
timeouts due read by cutoff only (one call across priorities, SchedulingStore), the outlier state of a server kept through
release and update, and the servers that failed a task kept with the task."""

from __future__ import annotations

from core.domain.models import TaskStatus
from core.errors import StaleWriteError
from core.ports.storage import Store
from tests.contract.factories import (
    NOW,
    applied,
    assert_same,
    claim_changes,
    completed_changes,
    put_online_server,
    put_pending,
)

# -- pending_queued_before ------------------------------------------------------------------


def test_queue_timeouts_due_are_the_old_ones_of_every_priority_oldest_first(store: Store) -> None:
    # GIVEN tasks queued before, at and after the cutoff, at several priorities
    cutoff = NOW + 100
    due = [put_pending(store, priority=5, queued_at=NOW + q) for q in (100, 0, 50)]
    due += [
        put_pending(store, priority=4, queued_at=NOW + 10),
        put_pending(store, priority=6, queued_at=NOW + 20),
    ]
    put_pending(store, priority=5, queued_at=NOW + 101)
    put_pending(store, priority=6, queued_at=NOW + 101)

    # WHEN the due ones are read
    listed = store.pending_queued_before(cutoff, 10)

    # THEN exactly those at or before the cutoff come back, oldest first whatever their priority
    assert [t.id for t in listed] == [t.id for t in sorted(due, key=lambda t: t.queued_at)]
    assert all(t.status is TaskStatus.PENDING for t in listed)


def test_queue_timeouts_due_respect_the_limit_and_priorities_zero_and_ten(store: Store) -> None:
    # GIVEN three old tasks at priority 0 and one, older still, at priority 10
    zeros = [put_pending(store, priority=0, queued_at=NOW + q) for q in range(1, 4)]
    ten = put_pending(store, priority=10, queued_at=NOW)

    # WHEN / THEN the limit holds, oldest first across the extreme priorities
    assert [t.id for t in store.pending_queued_before(NOW + 5, 2)] == [ten.id, zeros[0].id]
    assert [t.id for t in store.pending_queued_before(NOW + 5, 10)] == [ten.id, *(z.id for z in zeros)]


def test_queue_timeouts_due_leave_out_tasks_no_longer_pending(store: Store) -> None:
    # GIVEN an old task that a server took and one that was cancelled
    server = put_online_server(store)
    taken = put_pending(store, priority=3, queued_at=NOW)
    store.claim_task(taken, claim_changes(taken, server.id))
    cancelled = put_pending(store, priority=3, queued_at=NOW)
    store.update_task(
        cancelled.id,
        {"status": TaskStatus.CANCELLED, "updated_at": NOW + 1},
        from_status={TaskStatus.PENDING},
    )

    # WHEN / THEN neither is due for a queue timeout
    assert store.pending_queued_before(NOW + 1_000, 10) == []


def test_queue_timeouts_due_of_a_requeued_task_count_from_its_new_queued_at(store: Store) -> None:
    # GIVEN an old task that went back to the queue later
    server = put_online_server(store)
    task = put_pending(store, priority=2, queued_at=NOW)
    claimed = store.claim_task(task, claim_changes(task, server.id))
    store.release_task(claimed, {"status": TaskStatus.PENDING, "server_id": None, "queued_at": NOW + 500})

    # WHEN / THEN it is not due before its new queued_at, and due from it
    assert store.pending_queued_before(NOW + 499, 10) == []
    assert [t.id for t in store.pending_queued_before(NOW + 500, 10)] == [task.id]


# -- outlier state ---------------------------------------------------------------------------


def test_release_counts_a_failure_in_a_row_and_a_finish_resets_it(store: Store) -> None:
    # GIVEN a server with two failed attempts in a row
    server = put_online_server(store, outlier_failures=2)
    task = put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, server.id))

    # WHEN a third attempt fails (requeued with the failure counted)
    store.release_task(
        claimed,
        {"status": TaskStatus.PENDING, "server_id": None, "failed_servers": [server.id]},
        server_counters={"failure_count": 1, "outlier_failures": 1},
    )

    # THEN the run is 3 and the task remembers the server that failed it
    after = store.get_server(server.id)
    assert after is not None and after.outlier_failures == 3
    requeued = store.get_task(task.id)
    assert requeued is not None and requeued.failed_servers == [server.id]

    # WHEN the next attempt finishes
    again = store.claim_task(requeued, claim_changes(requeued, server.id))
    store.release_task(again, completed_changes(), server_values={"outlier_failures": 0})

    # THEN the run is over; the slot is free
    final = store.get_server(server.id)
    assert final is not None and (final.outlier_failures, final.active_tasks) == (0, 0)


def test_ejection_is_a_versioned_server_update_that_one_writer_wins(store: Store) -> None:
    # GIVEN a server at the failure threshold
    server = put_online_server(store, outlier_failures=3)
    ejection = {
        "ejections": 1,
        "ejected_until": NOW + 30_000,
        "slow_start_from": NOW + 30_000,
        "outlier_failures": 0,
    }

    # WHEN two dispatchers eject it from the same read
    first = store.update_server(server.id, ejection, version=server.version)
    try:
        store.update_server(server.id, {**ejection, "ejections": 2}, version=server.version)
        second_won = True
    except StaleWriteError as exc:
        second_won = False
        assert_same(exc.current, first)

    # THEN only the first write stands, and it is what is read back
    assert not second_won
    assert_same(first, applied(server, {**ejection, "version": server.version + 1}))
    assert_same(store.get_server(server.id), first)
    assert [s for s in store.list_servers() if s.id == server.id] == [first]


def test_new_fields_have_their_defaults_when_not_set(store: Store) -> None:
    # GIVEN a server and a task stored without any outlier or failover state
    server = put_online_server(store)
    task = put_pending(store)

    # WHEN / THEN they read back with the defaults
    read = store.get_server(server.id)
    assert read is not None
    assert (read.outlier_failures, read.ejections, read.ejected_until, read.slow_start_from) == (
        0,
        0,
        None,
        None,
    )
    got = store.get_task(task.id)
    assert got is not None and got.failed_servers == []


# -- pending_by_need -------------------------------------------------------------------------


def test_pending_by_need_counts_each_priority_and_capability_set(store: Store) -> None:
    # GIVEN PENDING tasks needing the same set in two orders, with a repeat, at two priorities;
    # one needing nothing; and one that a server took
    for capabilities in (["tpu", "gpu"], ["gpu", "tpu"], ["gpu", "tpu", "gpu"]):
        put_pending(store, priority=5, capabilities=capabilities)
    put_pending(store, priority=0, capabilities=["gpu", "tpu"])
    put_pending(store, priority=10)
    server = put_online_server(store)
    taken = put_pending(store, priority=5, capabilities=["cpu"])
    store.claim_task(taken, claim_changes(taken, server.id))

    # WHEN / THEN the counts are by priority and sorted set, without the task in flight
    assert store.pending_by_need() == {(5, ("gpu", "tpu")): 3, (0, ("gpu", "tpu")): 1, (10, ()): 1}


def test_pending_by_need_is_empty_without_a_backlog(store: Store) -> None:
    assert store.pending_by_need() == {}

"""claim_task and release_task: a task enters or leaves PROCESSING in the same atomic write
that takes or frees its slot, so `active_tasks` always equals the tasks PROCESSING there."""

from __future__ import annotations

import pytest

from core.domain.models import ServerStatus, TaskStatus
from core.errors import NoCapacityError, StaleWriteError
from core.ports.storage import CLOCK_SKEW_MS, Store

from .factories import (
    NOW,
    active_tasks,
    applied,
    assert_same,
    claim_changes,
    completed_changes,
    make_task,
    put_online_server,
    put_pending,
)

# -- claim_task ---------------------------------------------------------------------------


def test_claim_takes_a_slot_and_puts_the_task_processing_there(store: Store) -> None:
    # GIVEN an online server with free slots and a PENDING task
    server = put_online_server(store, max_concurrent=3)
    task = put_pending(store)
    changes = claim_changes(task, server.id)

    # WHEN the task is claimed for the server
    claimed = store.claim_task(task, changes)

    # THEN the task is PROCESSING there, as returned and as stored, and one slot is taken
    assert_same(claimed, applied(task, changes))
    assert_same(store.get_task(task.id), claimed)
    assert active_tasks(store, server.id) == 1
    assert [t.id for t in store.processing_on_server(server.id)] == [task.id]


def test_claim_changes_only_the_slot_count_of_the_server(store: Store) -> None:
    # GIVEN an online server
    server = put_online_server(store, tasks_processed=4, version=2)
    task = put_pending(store)

    # WHEN a task is claimed on it
    store.claim_task(task, claim_changes(task, server.id))

    # THEN only the slot count and the claim time moved (not the version, which guards
    # health and settings)
    assert_same(store.get_server(server.id), applied(server, {"active_tasks": 1, "last_claim_at": NOW + 10}))


def test_claims_fill_a_server_up_to_max_concurrent_and_no_further(store: Store) -> None:
    # GIVEN a server with 2 slots and three PENDING tasks
    server = put_online_server(store, max_concurrent=2)
    first, second, third = (put_pending(store) for _ in range(3))
    store.claim_task(first, claim_changes(first, server.id))
    store.claim_task(second, claim_changes(second, server.id))

    # WHEN the third is claimed on the full server
    with pytest.raises(NoCapacityError):
        store.claim_task(third, claim_changes(third, server.id))

    # THEN the task is unchanged and no slot was taken
    assert_same(store.get_task(third.id), third)
    assert active_tasks(store, server.id) == 2
    assert [t.id for t in store.pending_queued_before(NOW + 10**9, 10)] == [third.id]


def test_claim_on_a_server_with_drifted_count_over_max_is_no_capacity(store: Store) -> None:
    # GIVEN a server whose count is above max_concurrent (max lowered by an admin)
    server = put_online_server(store, max_concurrent=2, active_tasks=3)
    task = put_pending(store)

    # WHEN / THEN a claim finds no capacity and nothing changes
    with pytest.raises(NoCapacityError):
        store.claim_task(task, claim_changes(task, server.id))
    assert_same(store.get_task(task.id), task)
    assert active_tasks(store, server.id) == 3


@pytest.mark.parametrize("status", [ServerStatus.DEGRADED, ServerStatus.OFFLINE, ServerStatus.MAINTENANCE])
def test_claim_on_a_server_that_is_not_online_is_no_capacity(store: Store, status: ServerStatus) -> None:
    # GIVEN a roomy server that is not online
    server = put_online_server(store, status=status, max_concurrent=50)
    task = put_pending(store)

    # WHEN a task is claimed on it
    with pytest.raises(NoCapacityError):
        store.claim_task(task, claim_changes(task, server.id))

    # THEN the task is unchanged and no slot was taken
    assert_same(store.get_task(task.id), task)
    assert active_tasks(store, server.id) == 0


def test_claim_on_a_server_that_went_offline_after_being_read_is_no_capacity(
    store: Store,
) -> None:
    # GIVEN a server that was online when the dispatcher read it, then went offline
    server = put_online_server(store)
    store.update_server(server.id, {"status": ServerStatus.OFFLINE}, version=server.version)
    task = put_pending(store)

    # WHEN / THEN the claim is refused on the server's state now
    with pytest.raises(NoCapacityError):
        store.claim_task(task, claim_changes(task, server.id))
    assert_same(store.get_task(task.id), task)


def test_claim_on_an_unknown_server_is_no_capacity_and_creates_nothing(store: Store) -> None:
    # GIVEN a PENDING task and no server "srv-ghost"
    task = put_pending(store)

    # WHEN it is claimed for that server
    with pytest.raises(NoCapacityError):
        store.claim_task(task, claim_changes(task, "srv-ghost"))

    # THEN the task is unchanged and no server appeared
    assert_same(store.get_task(task.id), task)
    assert store.get_server("srv-ghost") is None
    assert store.list_servers() == []


def test_claim_on_a_deleted_server_is_no_capacity(store: Store) -> None:
    # GIVEN a server that was unregistered
    server = put_online_server(store)
    store.delete_server(server.id)
    task = put_pending(store)

    # WHEN a task is claimed for it
    with pytest.raises(NoCapacityError):
        store.claim_task(task, claim_changes(task, server.id))

    # THEN the task is unchanged and the server stays gone
    assert_same(store.get_task(task.id), task)
    assert store.get_server(server.id) is None


def test_claim_of_a_task_that_is_no_longer_pending_is_stale_and_takes_no_slot(
    store: Store,
) -> None:
    # GIVEN a task the dispatcher read as PENDING, then cancelled by its owner
    server = put_online_server(store)
    task = put_pending(store)
    cancelled = store.update_task(task.id, {"status": TaskStatus.CANCELLED}, from_status={TaskStatus.PENDING})

    # WHEN the dispatcher claims it with what it read
    with pytest.raises(StaleWriteError) as caught:
        store.claim_task(task, claim_changes(task, server.id))

    # THEN it loses, sees the cancelled task, and no slot was taken
    assert_same(caught.value.current, cancelled)
    assert_same(store.get_task(task.id), cancelled)
    assert active_tasks(store, server.id) == 0


def test_claim_of_a_task_already_processing_is_stale_and_takes_no_slot(store: Store) -> None:
    # GIVEN a task claimed on server A
    a = put_online_server(store)
    b = put_online_server(store)
    task = put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, a.id))

    # WHEN another dispatcher claims it on server B with the PENDING copy it read
    with pytest.raises(StaleWriteError) as caught:
        store.claim_task(task, claim_changes(task, b.id))

    # THEN it loses and B has no slot taken
    assert_same(caught.value.current, claimed)
    assert (active_tasks(store, a.id), active_tasks(store, b.id)) == (1, 0)


def test_claim_with_stale_attempts_is_stale_and_takes_no_slot(store: Store) -> None:
    # GIVEN a PENDING task whose attempts moved to 1 since the dispatcher read it (at 0)
    server = put_online_server(store)
    stored = put_pending(store, attempts=1)
    read_earlier = applied(stored, {"attempts": 0})

    # WHEN the dispatcher claims with the old copy
    with pytest.raises(StaleWriteError) as caught:
        store.claim_task(read_earlier, claim_changes(read_earlier, server.id))

    # THEN it loses and nothing changes
    assert_same(caught.value.current, stored)
    assert_same(store.get_task(stored.id), stored)
    assert active_tasks(store, server.id) == 0


def test_claim_of_an_unknown_task_is_stale_and_creates_nothing(store: Store) -> None:
    # GIVEN a task object that was never stored (or already expired)
    server = put_online_server(store)
    ghost = make_task()

    # WHEN it is claimed
    with pytest.raises(StaleWriteError):
        store.claim_task(ghost, claim_changes(ghost, server.id))

    # THEN no task appeared and no slot was taken
    assert store.get_task(ghost.id) is None
    assert active_tasks(store, server.id) == 0


# -- release_task -------------------------------------------------------------------------


def test_release_frees_the_slot_and_adds_the_server_counters(store: Store) -> None:
    # GIVEN a task PROCESSING on a server with some history
    server = put_online_server(store, tasks_processed=10, success_count=9, processing_ms_total=500)
    task = put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, server.id))
    changes = completed_changes({"answer": 42, "scores": [0.5, 0.25]})

    # WHEN it completes
    released = store.release_task(
        claimed,
        changes,
        server_counters={"tasks_processed": 1, "success_count": 1, "processing_ms_total": 1234},
    )

    # THEN it is COMPLETED as returned and stored, the slot is free and the counters added
    assert_same(released, applied(claimed, changes))
    assert_same(store.get_task(task.id), released)
    after = store.get_server(server.id)
    assert after is not None
    assert after.active_tasks == 0
    assert (after.tasks_processed, after.success_count, after.processing_ms_total) == (
        11,
        10,
        1734,
    )
    assert (after.failure_count, after.version) == (0, server.version)
    assert store.processing_on_server(server.id) == []


def test_release_without_counters_only_frees_the_slot(store: Store) -> None:
    # GIVEN two tasks PROCESSING on a server
    server = put_online_server(store)
    tasks = [put_pending(store) for _ in range(2)]
    claimed = [store.claim_task(t, claim_changes(t, server.id)) for t in tasks]

    # WHEN one goes back to the queue (a busy backend), with no counters
    store.release_task(claimed[0], {"status": TaskStatus.PENDING, "server_id": None, "queued_at": NOW + 9})

    # THEN one slot is freed and the counters are unchanged
    assert_same(store.get_server(server.id), applied(server, {"active_tasks": 1, "last_claim_at": NOW + 10}))


def test_release_counters_accumulate_over_releases(store: Store) -> None:
    # GIVEN a server that ran three tasks, two that succeed and one that fails
    server = put_online_server(store)
    outcomes = [("success_count", 100), ("failure_count", 250), ("success_count", 50)]
    for counter, ms in outcomes:
        task = put_pending(store)
        claimed = store.claim_task(task, claim_changes(task, server.id))
        # WHEN each is released with its counters
        store.release_task(
            claimed,
            {"status": TaskStatus.FAILED if counter == "failure_count" else TaskStatus.COMPLETED},
            server_counters={"tasks_processed": 1, counter: 1, "processing_ms_total": ms},
        )

    # THEN the counters are the sums
    after = store.get_server(server.id)
    assert after is not None
    assert (
        after.tasks_processed,
        after.success_count,
        after.failure_count,
        after.processing_ms_total,
        after.active_tasks,
    ) == (3, 2, 1, 400, 0)


def test_release_with_wrong_attempts_is_stale_and_writes_nothing(store: Store) -> None:
    # GIVEN a task PROCESSING in its first attempt
    server = put_online_server(store)
    task = put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, server.id))
    wrong = applied(claimed, {"attempts": claimed.attempts + 1})

    # WHEN a release names another attempt
    with pytest.raises(StaleWriteError) as caught:
        store.release_task(wrong, completed_changes(), server_counters={"tasks_processed": 1})

    # THEN it loses with the current task, and the task, slot and counters are unchanged
    assert_same(caught.value.current, claimed)
    assert_same(store.get_task(task.id), claimed)
    assert_same(store.get_server(server.id), applied(server, {"active_tasks": 1, "last_claim_at": NOW + 10}))


def test_release_of_a_task_no_longer_processing_is_stale_and_frees_nothing(
    store: Store,
) -> None:
    # GIVEN a task that was released once already (a duplicate callback) and a busy server
    server = put_online_server(store)
    task, other = put_pending(store), put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, server.id))
    store.claim_task(other, claim_changes(other, server.id))
    done = store.release_task(claimed, completed_changes(), server_counters={"success_count": 1})

    # WHEN the same release is attempted again
    with pytest.raises(StaleWriteError) as caught:
        store.release_task(claimed, {"status": TaskStatus.FAILED}, server_counters={"failure_count": 1})

    # THEN it loses with the completed task, and the other task's slot is not freed
    assert_same(caught.value.current, done)
    assert_same(store.get_task(task.id), done)
    after = store.get_server(server.id)
    assert after is not None
    assert (after.active_tasks, after.success_count, after.failure_count) == (1, 1, 0)


def test_release_naming_another_server_is_stale_and_frees_nothing(store: Store) -> None:
    # GIVEN a task PROCESSING on A, and B with a task of its own
    a = put_online_server(store)
    b = put_online_server(store)
    task, on_b = put_pending(store), put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, a.id))
    store.claim_task(on_b, claim_changes(on_b, b.id))

    # WHEN a release says the task is on B
    with pytest.raises(StaleWriteError):
        store.release_task(applied(claimed, {"server_id": b.id}), completed_changes())

    # THEN nothing changed on either server or the task
    assert_same(store.get_task(task.id), claimed)
    assert (active_tasks(store, a.id), active_tasks(store, b.id)) == (1, 1)


def test_release_of_a_pending_task_is_stale(store: Store) -> None:
    # GIVEN a PENDING task (never claimed) and a server with a task PROCESSING
    server = put_online_server(store)
    busy = put_pending(store)
    store.claim_task(busy, claim_changes(busy, server.id))
    task = put_pending(store)
    pretend = applied(task, {"server_id": server.id})

    # WHEN it is released as if it ran there
    with pytest.raises(StaleWriteError):
        store.release_task(pretend, completed_changes())

    # THEN nothing changed
    assert_same(store.get_task(task.id), task)
    assert active_tasks(store, server.id) == 1


def test_release_after_the_server_was_deleted_still_moves_the_task_on(store: Store) -> None:
    # GIVEN a task PROCESSING on a server that was then unregistered
    server = put_online_server(store)
    task = put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, server.id))
    store.delete_server(server.id)

    # WHEN the task goes back to the queue
    changes = {"status": TaskStatus.PENDING, "server_id": None, "queued_at": NOW + 7}
    released = store.release_task(claimed, changes, server_counters={"failure_count": 1})

    # THEN it left PROCESSING, and the server was not brought back by the counters
    assert_same(released, applied(claimed, changes))
    assert_same(store.get_task(task.id), released)
    assert [t.id for t in store.pending_queued_before(NOW + 10**9, 10)] == [task.id]
    assert store.get_server(server.id) is None
    assert store.list_servers() == []


def test_release_after_the_server_was_deleted_and_registered_again(store: Store) -> None:
    # GIVEN a task PROCESSING on a server, which is unregistered and registered afresh
    server = put_online_server(store)
    task = put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, server.id))
    store.delete_server(server.id)
    fresh = put_online_server(store, id=server.id)

    # WHEN the old task completes
    store.release_task(claimed, completed_changes())

    # THEN the task is COMPLETED and the fresh registration's count never goes negative
    got = store.get_task(task.id)
    assert got is not None and got.status is TaskStatus.COMPLETED
    assert active_tasks(store, fresh.id) >= 0


def test_release_of_an_old_registrations_task_leaves_the_new_registrations_slots_alone(store: Store) -> None:
    # GIVEN task A PROCESSING on a server that is then unregistered and registered afresh
    # (after A started), and task B PROCESSING on the fresh registration
    server = put_online_server(store)
    old_task = put_pending(store)
    old = store.claim_task(old_task, claim_changes(old_task, server.id))
    store.delete_server(server.id)
    fresh = put_online_server(store, id=server.id, registered_at=NOW + 10 + CLOCK_SKEW_MS + 1)
    new_task = put_pending(store)
    store.claim_task(new_task, claim_changes(new_task, fresh.id))

    # WHEN the old registration's task finishes
    store.release_task(old, completed_changes(), server_counters={"success_count": 1})

    # THEN it is COMPLETED, and the fresh registration still counts B (and not A's success)
    assert store.get_task(old_task.id).status is TaskStatus.COMPLETED  # type: ignore[union-attr]
    got = store.get_server(fresh.id)
    assert got is not None and (got.active_tasks, got.success_count) == (1, 0)
    assert [t.id for t in store.processing_on_server(fresh.id)] == [new_task.id]


def test_release_sets_server_values_in_the_same_write(store: Store) -> None:
    server = put_online_server(store)
    task = put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, server.id))

    store.release_task(claimed, completed_changes(), server_values={"latency_ewma_ms": 42})

    got = store.get_server(server.id)
    assert got is not None and (got.active_tasks, got.latency_ewma_ms, got.version) == (0, 42, server.version)


def test_release_refuses_to_set_the_slot_count_directly(store: Store) -> None:
    server = put_online_server(store)
    task = put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, server.id))
    with pytest.raises(ValueError):
        store.release_task(claimed, completed_changes(), server_values={"active_tasks": 0})
    assert active_tasks(store, server.id) == 1


def test_processing_count_and_slot_count_agree_through_a_lifecycle(store: Store) -> None:
    # GIVEN a server with 3 slots and five tasks
    server = put_online_server(store, max_concurrent=3)
    tasks = [put_pending(store, queued_at=NOW + i) for i in range(5)]

    # WHEN tasks are claimed, refused, released and claimed again
    running = {}
    refused = 0
    for task in tasks:
        try:
            running[task.id] = store.claim_task(task, claim_changes(task, server.id))
        except NoCapacityError:
            refused += 1
    first_id = tasks[0].id
    store.release_task(running.pop(first_id), completed_changes())
    waiting = store.pending_queued_before(NOW + 10**9, 10)
    running[waiting[0].id] = store.claim_task(waiting[0], claim_changes(waiting[0], server.id))

    # THEN at every step the slot count is the number PROCESSING there
    assert refused == 2
    assert active_tasks(store, server.id) == len(running) == 3
    assert sorted(t.id for t in store.processing_on_server(server.id)) == sorted(running)
    assert waiting[0].id == tasks[3].id

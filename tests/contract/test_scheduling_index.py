"""The scheduling index (docs/SCHEDULING.md) on every adapter: owner queues and their counts,
each owner queue's FIFO, the owners' tasks in flight, the owner limit on a claim (also under a
race), and the queue-timeout read of what is due."""

from __future__ import annotations

from core.domain.models import TaskStatus
from core.domain.scheduling import OwnerQueue
from core.errors import OwnerLimitError, StaleWriteError
from core.ports.storage import Store

from .factories import (
    NOW,
    claim_changes,
    completed_changes,
    put_online_server,
    put_pending,
    run_concurrently,
    split,
)


def counts(store: Store) -> dict[tuple[str, int, str], int]:
    return {(q.queue, q.priority, q.owner): q.pending for q in store.owner_queues()}


def test_owner_queues_count_pending_tasks_per_capability_set_priority_and_owner(store: Store) -> None:
    put_pending(store, owner="alice", priority=5, capabilities=["video", "gpu"])
    put_pending(store, owner="alice", priority=5, capabilities=["gpu", "video"])
    put_pending(store, owner="alice", priority=7, capabilities=[])
    put_pending(store, owner="bob", priority=5, capabilities=["gpu", "video"])
    assert counts(store) == {("gpu,video", 5, "alice"): 2, ("", 7, "alice"): 1, ("gpu,video", 5, "bob"): 1}
    assert store.count_pending() == 4
    assert store.pending_by_priority() == {5: 3, 7: 1}


def test_queue_tasks_are_fifo_by_ready_time_and_page_after_a_position(store: Store) -> None:
    late = put_pending(store, owner="alice", queued_at=NOW + 5)
    backing_off = put_pending(store, owner="alice", queued_at=NOW, not_before=NOW + 9)
    first = put_pending(store, owner="alice", queued_at=NOW + 1)
    put_pending(store, owner="bob", queued_at=NOW)  # another owner queue
    put_pending(store, owner="alice", priority=6, queued_at=NOW)  # another priority
    queue = OwnerQueue(queue="", priority=5, owner="alice", pending=3)
    assert [t.id for t in store.queue_tasks(queue, 10)] == [first.id, late.id, backing_off.id]
    assert [t.id for t in store.queue_tasks(queue, 1)] == [first.id]
    assert [t.id for t in store.queue_tasks(queue, 10, after=(NOW + 1, first.id))] == [
        late.id,
        backing_off.id,
    ]
    assert [store.queue_ahead(t) for t in (first, late, backing_off)] == [0, 1, 2]


def test_queue_tasks_are_whole_tasks_payload_included_with_pending_by_need_from_the_queues(
    store: Store,
) -> None:
    # The scheduler hands these tasks to dispatch, which sends their payload (DynamoDB: ByQueue
    # projects keys only, and the tasks are read from the table).
    task = put_pending(store, owner="alice", capabilities=["tpu", "gpu"], payload={"prompt": "x" * 300})
    put_pending(store, owner="bob", capabilities=["gpu", "tpu"], priority=2)
    (found,) = store.queue_tasks(OwnerQueue(queue="gpu,tpu", priority=5, owner="alice", pending=1), 10)
    assert found == task
    assert store.pending_by_need() == {(5, ("gpu", "tpu")): 1, (2, ("gpu", "tpu")): 1}


def test_a_claim_moves_the_task_from_its_owner_queue_to_the_owners_in_flight(store: Store) -> None:
    server = put_online_server(store, max_concurrent=5)
    task = put_pending(store, owner="alice", capabilities=["gpu"])
    store.claim_task(task, claim_changes(task, server.id))
    assert counts(store) == {}
    assert store.in_flight_by_owner() == {"alice": 1}
    queue = OwnerQueue(queue="gpu", priority=5, owner="alice", pending=1)
    assert store.queue_tasks(queue, 10) == []


def test_a_release_ends_the_flight_and_a_requeue_counts_the_task_pending_again(store: Store) -> None:
    server = put_online_server(store, max_concurrent=5)
    done, requeued = put_pending(store, owner="alice"), put_pending(store, owner="alice")
    claimed = [store.claim_task(t, claim_changes(t, server.id)) for t in (done, requeued)]
    assert store.in_flight_by_owner() == {"alice": 2}
    store.release_task(claimed[0], completed_changes())
    back = store.release_task(
        claimed[1],
        {"status": TaskStatus.PENDING, "server_id": None, "queued_at": NOW + 50, "not_before": NOW + 90},
    )
    assert store.in_flight_by_owner() == {}
    assert counts(store) == {("", 5, "alice"): 1}
    queue = OwnerQueue(queue="", priority=5, owner="alice", pending=1)
    assert [t.id for t in store.queue_tasks(queue, 10)] == [back.id]


def test_cancel_expire_and_retry_keep_the_owner_queue_counts(store: Store) -> None:
    cancelled, expired = put_pending(store, owner="alice"), put_pending(store, owner="alice")
    finished = {"status": TaskStatus.CANCELLED, "completed_at": NOW + 1, "updated_at": NOW + 1}
    store.update_task(cancelled.id, finished, from_status={TaskStatus.PENDING})
    store.update_task(
        expired.id, {**finished, "status": TaskStatus.TIMEOUT}, from_status={TaskStatus.PENDING}
    )
    assert counts(store) == {}
    retry = {"status": TaskStatus.PENDING, "queued_at": NOW + 2, "updated_at": NOW + 2, "completed_at": None}
    store.update_task(cancelled.id, retry, from_status={TaskStatus.CANCELLED, TaskStatus.TIMEOUT})
    assert counts(store) == {("", 5, "alice"): 1}
    # A transition that loses its condition changes no count.
    try:
        store.update_task(cancelled.id, retry, from_status={TaskStatus.CANCELLED})
    except StaleWriteError:
        pass
    else:
        raise AssertionError("a retry of a PENDING task must lose")
    assert counts(store) == {("", 5, "alice"): 1}
    # A write that may start from PENDING or another state counts only what really moved.
    store.update_task(cancelled.id, finished, from_status={TaskStatus.PENDING, TaskStatus.PROCESSING})
    assert counts(store) == {}


def test_a_claim_over_the_owner_limit_is_refused_and_writes_nothing(store: Store) -> None:
    server = put_online_server(store, max_concurrent=5)
    first, second = put_pending(store, owner="alice"), put_pending(store, owner="alice")
    store.claim_task(first, claim_changes(first, server.id), owner_limit=1)
    try:
        store.claim_task(second, claim_changes(second, server.id), owner_limit=1)
    except OwnerLimitError as refused:
        assert refused.owner == "alice"
    else:
        raise AssertionError("the owner is at its limit")
    current = store.get_task(second.id)
    assert current is not None and current.status is TaskStatus.PENDING
    assert store.in_flight_by_owner() == {"alice": 1}
    assert counts(store) == {("", 5, "alice"): 1}
    server_now = store.get_server(server.id)
    assert server_now is not None and server_now.active_tasks == 1
    # Another owner is not held back, and no limit (0) means none.
    other = put_pending(store, owner="bob")
    store.claim_task(other, claim_changes(other, server.id), owner_limit=1)
    store.claim_task(second, claim_changes(second, server.id), owner_limit=0)
    assert store.in_flight_by_owner() == {"alice": 2, "bob": 1}


def test_concurrent_claims_of_one_owner_never_pass_its_limit(store: Store) -> None:
    server = put_online_server(store, max_concurrent=50)
    pending = [put_pending(store, owner="alice") for _ in range(8)]
    outcomes = run_concurrently(
        8, lambda i: store.claim_task(pending[i], claim_changes(pending[i], server.id), owner_limit=3)
    )
    wins, refused = split(outcomes, OwnerLimitError)
    assert len(wins) == 3 and len(refused) == 5
    assert store.in_flight_by_owner() == {"alice": 3}
    assert counts(store) == {("", 5, "alice"): 5}


def test_pending_queued_before_reads_only_what_is_due_oldest_first(store: Store) -> None:
    old_low = put_pending(store, priority=0, queued_at=NOW - 300)
    old_high = put_pending(store, priority=9, queued_at=NOW - 200)
    put_pending(store, priority=9, queued_at=NOW + 100)
    put_pending(store, priority=0, queued_at=NOW + 100)
    assert [t.id for t in store.pending_queued_before(NOW, 10)] == [old_low.id, old_high.id]
    assert [t.id for t in store.pending_queued_before(NOW, 1)] == [old_low.id]


def test_set_in_flight_repairs_a_count_only_if_it_is_still_the_one_read(store: Store) -> None:
    server = put_online_server(store, max_concurrent=5)
    task = put_pending(store, owner="alice")
    store.claim_task(task, claim_changes(task, server.id))
    assert not store.set_in_flight("alice", 0, expected=2, quiet_since=NOW + 1_000)
    assert store.set_in_flight("alice", 4, expected=1, quiet_since=NOW + 1_000)
    assert store.in_flight_by_owner() == {"alice": 4}
    assert store.set_in_flight("nobody", 0, expected=0, quiet_since=NOW + 1_000)
    assert store.in_flight_by_owner() == {"alice": 4}

"""Tasks: put/get, update_task's compare-and-set, and the task indexes."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.models import Task, TaskStatus
from core.errors import StaleWriteError
from core.ports.storage import Store

from .factories import (
    HOUR,
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

JSON_VALUES: list[Any] = [
    None,
    0,
    -17,
    2**53 + 1,
    3.25,
    0.1,
    "",
    "plain text",
    "ünïcödé ✓ 漢字 🚀",
    True,
    False,
    [],
    {},
    [1, "two", 3.5, None, True, {"nested": [0.25]}],
    {"code": "E_BACKEND", "detail": {"retryable": False, "scores": [0.1, 0.2, 0.30000000000000004]}},
]


def full_task(**overrides: Any) -> Any:
    """A task with every field set to something other than its default."""
    fields: dict[str, Any] = {
        "owner": "bob@example.com",
        "type": "video.upscale-v2",
        "priority": 10,
        "payload": {
            "prompt": "Ein Bär läuft über die Straße 🐻 — 熊",
            "params": {"temperature": 0.7, "top_p": 0.95, "tiny": 1.5e-9, "neg": -3.25},
            "frames": [1, 2, 3, 5, 8],
            "mixed": [1, 2.5, "x", None, True, False, {"a": []}, [[]]],
            "empty_string": "",
            "empty_list": [],
            "empty_object": {},
            "null": None,
            "big": 9_007_199_254_740_993,
            "negative": -42,
            "zero": 0,
            "deep": {"a": {"b": {"c": {"d": [{"e": 0.125}]}}}},
        },
        "capabilities": ["gpu", "video", "cuda-12"],
        "is_async": False,
        "timeout_ms": 90_000,
        "webhook": "https://hooks.example.com/taskgate?x=1&y=ü",
        "status": TaskStatus.FAILED,
        "progress": 42,
        "message": "backend said: out of memory",
        "server_id": "srv-gpu-7",
        "result": {"partial": [0.5, 0.25], "frames": 12},
        "error": {"code": 507, "message": "CUDA OOM"},
        "attempts": 2,
        "attempt_limit": 5,
        "retries": 1,
        "created_at": NOW - 5000,
        "updated_at": NOW,
        "queued_at": NOW - 4000,
        "not_before": NOW - 3000,
        "started_at": NOW - 2000,
        "completed_at": NOW - 1000,
        "deadline": NOW + HOUR,
        "expires_at": NOW // 1000 + 7 * 86_400,
    }
    fields.update(overrides)
    return make_task(**fields)


# -- put_task / get_task -------------------------------------------------------------------


def test_put_then_get_round_trips_every_field_exactly(store: Store) -> None:
    # GIVEN a task with every field set, nested floats, unicode, lists and empty containers
    task = full_task()

    # WHEN it is stored and read back
    store.put_task(task)
    got = store.get_task(task.id)

    # THEN every field comes back equal and of the same type (enum, float, list, ...)
    assert got is not None
    assert_same(got, task)


def test_put_then_get_round_trips_a_minimal_task_with_none_fields(store: Store) -> None:
    # GIVEN a task with every optional field left at its default (None, [], 0)
    task = make_task(payload={})

    # WHEN it is stored and read back
    store.put_task(task)
    got = store.get_task(task.id)

    # THEN the None fields stay None and the defaults stay defaults
    assert got is not None
    assert_same(got, task)
    assert got.server_id is None and got.result is None and got.deadline is None


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_result_and_error_round_trip_any_json_value(store: Store, value: Any) -> None:
    # GIVEN a finished task whose result and error are an arbitrary JSON value
    task = make_task(status=TaskStatus.COMPLETED, result=value, error=value)

    # WHEN it is stored and read back
    store.put_task(task)
    got = store.get_task(task.id)

    # THEN the value is the same JSON value, type included
    assert got is not None
    assert_same(got.result, value)
    assert_same(got.error, value)


def test_integral_floats_stay_floats(store: Store) -> None:
    # GIVEN a payload with floats that happen to be whole numbers, beside true integers
    payload = {"scale": 2.0, "zero": 0.0, "neg": -1.0, "count": 2, "list": [1.0, 1]}
    task = make_task(payload=payload, result=1.0)

    # WHEN it is stored and read back
    store.put_task(task)
    got = store.get_task(task.id)

    # THEN 2.0 is still the float 2.0 (a JSON client would see "2.0", not "2")
    assert got is not None
    assert_same(got.payload, payload)
    assert_same(got.result, 1.0)


def test_extreme_json_numbers_round_trip(store: Store) -> None:
    # GIVEN numbers any JSON parser accepts, outside DynamoDB's native number range/precision
    payload = {
        "huge": 1.5e300,
        "tiny": 5e-324,
        "precise": 0.1234567890123456,
        "int64_max": 2**63 - 1,
        "int64_min": -(2**63),
    }
    task = make_task(payload=payload)

    # WHEN it is stored and read back
    store.put_task(task)
    got = store.get_task(task.id)

    # THEN each number is exactly what was stored
    assert got is not None
    assert_same(got.payload, payload)


def test_put_task_with_a_taken_id_is_a_stale_write_and_keeps_the_first(store: Store) -> None:
    # GIVEN a stored task
    first = put_pending(store, payload={"n": 1})

    # WHEN another task with the same id is put
    second = make_task(id=first.id, payload={"n": 2}, owner="mallory")
    with pytest.raises(StaleWriteError):
        store.put_task(second)

    # THEN the first task is untouched
    assert_same(store.get_task(first.id), first)


def test_get_task_of_an_unknown_id_is_none(store: Store) -> None:
    # GIVEN a store with some other task
    put_pending(store)

    # WHEN / THEN an unknown id reads as None
    assert store.get_task("task-that-does-not-exist") is None


# -- update_task --------------------------------------------------------------------------


def test_update_task_from_an_allowed_status_writes_and_returns_the_task(store: Store) -> None:
    # GIVEN a PENDING task
    task = put_pending(store)
    changes = {
        "status": TaskStatus.CANCELLED,
        "message": "cancelled by user",
        "completed_at": NOW + 100,
        "updated_at": NOW + 100,
        "expires_at": NOW // 1000 + 86_400,
    }

    # WHEN it is cancelled from PENDING
    written = store.update_task(task.id, changes, from_status={TaskStatus.PENDING})

    # THEN the returned task is the task with the changes, and that is what is stored
    assert_same(written, applied(task, changes))
    assert_same(store.get_task(task.id), written)


def test_update_task_accepts_any_of_several_from_statuses(store: Store) -> None:
    # GIVEN a TIMEOUT task
    task = put_pending(store, status=TaskStatus.TIMEOUT, attempts=3, error="timed out")
    retry = {
        "status": TaskStatus.PENDING,
        "attempts": 0,
        "retries": 1,
        "error": None,
        "queued_at": NOW + 1,
    }

    # WHEN it is retried from {FAILED, TIMEOUT, CANCELLED}
    written = store.update_task(
        task.id,
        retry,
        from_status={TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED},
    )

    # THEN it is PENDING again, its error cleared, and back in the queue
    assert written.status is TaskStatus.PENDING
    assert written.error is None
    assert_same(store.get_task(task.id), applied(task, retry))
    assert queued(store) == [task.id]


def test_update_task_leaves_unmentioned_fields_alone(store: Store) -> None:
    # GIVEN a task with many fields set
    task = full_task(status=TaskStatus.PENDING, server_id=None)
    store.put_task(task)

    # WHEN only the message is changed
    store.update_task(task.id, {"message": "still queued"}, from_status={TaskStatus.PENDING})

    # THEN every other field is as it was
    assert_same(store.get_task(task.id), applied(task, {"message": "still queued"}))


def test_update_task_can_set_fields_to_none(store: Store) -> None:
    # GIVEN a failed task with a message, an error and a result
    task = put_pending(
        store, status=TaskStatus.FAILED, message="boom", error={"e": 1}, result=[1], deadline=NOW
    )
    changes = {"message": None, "error": None, "result": None, "deadline": None}

    # WHEN those fields are set to None
    written = store.update_task(task.id, changes, from_status={TaskStatus.FAILED})

    # THEN they read back as None
    got = store.get_task(task.id)
    assert got is not None
    assert (got.message, got.error, got.result, got.deadline) == (None, None, None, None)
    assert_same(got, written)


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_update_task_writes_any_json_result(store: Store, value: Any) -> None:
    # GIVEN a FAILED task
    task = put_pending(store, status=TaskStatus.FAILED)

    # WHEN its result and error are updated to a JSON value
    store.update_task(task.id, {"result": value, "error": value}, from_status={TaskStatus.FAILED})

    # THEN the value reads back exactly
    got = store.get_task(task.id)
    assert got is not None
    assert_same(got.result, value)
    assert_same(got.error, value)


def test_update_task_from_a_wrong_status_is_stale_with_the_current_task(store: Store) -> None:
    # GIVEN a COMPLETED task
    task = put_pending(store, status=TaskStatus.COMPLETED, result={"ok": 1})

    # WHEN a caller tries to cancel it as if it were PENDING or PROCESSING
    with pytest.raises(StaleWriteError) as caught:
        store.update_task(
            task.id,
            {"status": TaskStatus.CANCELLED},
            from_status={TaskStatus.PENDING, TaskStatus.PROCESSING},
        )

    # THEN the error carries the task as it is, and nothing was written
    assert_same(caught.value.current, task)
    assert_same(store.get_task(task.id), task)


def test_update_task_of_an_unknown_id_is_stale_with_none_and_creates_nothing(
    store: Store,
) -> None:
    # GIVEN no task with that id
    # WHEN it is updated
    with pytest.raises(StaleWriteError) as caught:
        store.update_task("task-missing", {"status": TaskStatus.CANCELLED}, from_status={TaskStatus.PENDING})

    # THEN the error says there is no current task, and no task appeared
    assert caught.value.current is None
    assert store.get_task("task-missing") is None


def test_update_task_enforces_the_attempts_condition(store: Store) -> None:
    # GIVEN a FAILED task after 2 attempts
    task = put_pending(store, status=TaskStatus.FAILED, attempts=2)

    # WHEN a caller that saw 1 attempt writes
    with pytest.raises(StaleWriteError) as caught:
        store.update_task(task.id, {"message": "late"}, from_status={TaskStatus.FAILED}, attempts=1)

    # THEN it loses and nothing changes; with the right count it wins
    assert_same(caught.value.current, task)
    assert_same(store.get_task(task.id), task)
    written = store.update_task(task.id, {"message": "on time"}, from_status={TaskStatus.FAILED}, attempts=2)
    assert written.message == "on time"


def test_update_task_enforces_the_server_condition(store: Store) -> None:
    # GIVEN a task PROCESSING on server A
    server = put_online_server(store)
    other = put_online_server(store)
    task = put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, server.id))

    # WHEN a progress update names server B
    with pytest.raises(StaleWriteError) as caught:
        store.update_task(
            task.id,
            {"progress": 50},
            from_status={TaskStatus.PROCESSING},
            attempts=claimed.attempts,
            server_id=other.id,
        )

    # THEN it loses and nothing changes
    assert_same(caught.value.current, claimed)
    assert_same(store.get_task(task.id), claimed)

    # AND the same update naming server A wins, without touching any slot
    written = store.update_task(
        task.id,
        {"progress": 50, "message": "halfway"},
        from_status={TaskStatus.PROCESSING},
        attempts=claimed.attempts,
        server_id=server.id,
    )
    assert_same(written, applied(claimed, {"progress": 50, "message": "halfway"}))
    assert_same(store.get_task(task.id), written)
    assert (active_tasks(store, server.id), active_tasks(store, other.id)) == (1, 0)


def test_update_task_server_condition_fails_for_a_task_on_no_server(store: Store) -> None:
    # GIVEN a PENDING task, on no server
    task = put_pending(store)

    # WHEN an update is conditional on it being on some server
    with pytest.raises(StaleWriteError):
        store.update_task(task.id, {"message": "x"}, from_status={TaskStatus.PENDING}, server_id="srv-any")

    # THEN nothing changed
    assert_same(store.get_task(task.id), task)


# -- tasks_by_owner -----------------------------------------------------------------------


def test_tasks_by_owner_lists_only_that_owner_newest_first(store: Store) -> None:
    # GIVEN alice's tasks created at shuffled times and in several states, and bob's task
    created = [NOW + 10, NOW + 40, NOW + 20, NOW + 30, NOW]
    statuses = [TaskStatus.PENDING, TaskStatus.COMPLETED, TaskStatus.FAILED]
    alice = [
        put_pending(store, owner="alice", created_at=at, status=statuses[i % 3])
        for i, at in enumerate(created)
    ]
    put_pending(store, owner="bob", created_at=NOW + 25)
    put_pending(store, owner="alice-2", created_at=NOW + 26)

    # WHEN alice's tasks are listed
    listed = store.tasks_by_owner("alice")

    # THEN they are exactly hers, newest first, as stored (as summaries: see list_tasks)
    expected = sorted(alice, key=lambda t: t.created_at, reverse=True)
    assert [t.id for t in listed] == [t.id for t in expected]
    for got, want in zip(listed, expected, strict=True):
        assert got.to_summary() == want.to_summary()


def test_tasks_by_owner_respects_the_limit_keeping_the_newest(store: Store) -> None:
    # GIVEN five tasks of one owner
    tasks = [put_pending(store, owner="carol", created_at=NOW + i) for i in range(5)]

    # WHEN two are asked for
    listed = store.tasks_by_owner("carol", limit=2)

    # THEN they are the two newest
    assert [t.id for t in listed] == [tasks[4].id, tasks[3].id]


def test_tasks_by_owner_of_an_unknown_owner_is_empty(store: Store) -> None:
    put_pending(store, owner="dave")
    assert store.tasks_by_owner("nobody") == []


# -- the PENDING index ---------------------------------------------------------------------


def queued(store: Store) -> list[str]:
    """The ids of every PENDING task, by the PENDING index (oldest queued_at first)."""
    return [t.id for t in store.pending_queued_before(NOW + 10**9, 100)]


def test_tasks_that_left_pending_leave_the_pending_index(store: Store) -> None:
    # GIVEN four PENDING tasks and a task stored as FAILED
    server = put_online_server(store)
    stay, cancel, claim, finish = (put_pending(store, queued_at=NOW + i) for i in range(4))
    put_pending(store, status=TaskStatus.FAILED)

    # WHEN one is cancelled, one claimed, one claimed and completed
    store.update_task(cancel.id, {"status": TaskStatus.CANCELLED}, from_status={TaskStatus.PENDING})
    store.claim_task(claim, claim_changes(claim, server.id))
    done = store.claim_task(finish, claim_changes(finish, server.id))
    store.release_task(done, completed_changes())

    # THEN only the untouched task is still in the queue
    assert queued(store) == [stay.id]
    assert store.count_pending() == 1


def test_a_task_released_back_to_pending_rejoins_the_queue(store: Store) -> None:
    # GIVEN a task that was claimed, and another that waits
    server = put_online_server(store)
    waiting = put_pending(store, queued_at=NOW + 50)
    task = put_pending(store, queued_at=NOW)
    claimed = store.claim_task(task, claim_changes(task, server.id))
    assert queued(store) == [waiting.id]

    # WHEN its attempt fails and it goes back to PENDING with a new queued_at
    store.release_task(
        claimed,
        {"status": TaskStatus.PENDING, "server_id": None, "deadline": None, "queued_at": NOW + 99},
    )

    # THEN it is queued again, behind the task that waited
    assert queued(store) == [waiting.id, task.id]


def test_the_pending_index_of_an_empty_store_is_empty(store: Store) -> None:
    assert queued(store) == []
    assert store.count_pending() == 0


# -- processing_due -----------------------------------------------------------------------


def test_processing_due_lists_only_processing_tasks_due_earliest_first(store: Store) -> None:
    # GIVEN PROCESSING tasks with shuffled deadlines, and non-PROCESSING tasks with deadlines
    server = put_online_server(store, max_concurrent=100)
    deadlines = [NOW + 300, NOW + 100, NOW + 1000, NOW + 200, NOW + 301]
    claimed = []
    for deadline in deadlines:
        task = put_pending(store)
        claimed.append(store.claim_task(task, claim_changes(task, server.id, deadline=deadline)))
    put_pending(store, deadline=NOW)  # PENDING with a stale deadline
    put_pending(store, status=TaskStatus.COMPLETED, deadline=NOW)
    leaving = put_pending(store)
    left = store.claim_task(leaving, claim_changes(leaving, server.id, deadline=NOW + 50))
    store.release_task(left, {"status": TaskStatus.COMPLETED})  # keeps its deadline field

    # WHEN tasks due at NOW + 300 are asked for
    due = store.processing_due(NOW + 300, 10)

    # THEN the PROCESSING ones with deadline <= NOW + 300 come back, earliest first
    assert [t.deadline for t in due] == [NOW + 100, NOW + 200, NOW + 300]
    assert all(t.status is TaskStatus.PROCESSING for t in due)
    by_deadline = {t.deadline: t for t in claimed}
    for got in due:
        assert_same(got, by_deadline[got.deadline])


def test_processing_due_respects_the_limit(store: Store) -> None:
    # GIVEN four PROCESSING tasks, all due
    server = put_online_server(store)
    for i in range(4):
        task = put_pending(store)
        store.claim_task(task, claim_changes(task, server.id, deadline=NOW + 40 - i * 10))

    # WHEN two are asked for
    due = store.processing_due(NOW + HOUR, 2)

    # THEN the two earliest come back
    assert [t.deadline for t in due] == [NOW + 10, NOW + 20]


def test_processing_due_with_nothing_due_is_empty(store: Store) -> None:
    server = put_online_server(store)
    task = put_pending(store)
    store.claim_task(task, claim_changes(task, server.id, deadline=NOW + HOUR))
    assert store.processing_due(NOW + HOUR - 1, 10) == []


# -- processing_on_server -----------------------------------------------------------------


def test_processing_on_server_lists_only_that_servers_processing_tasks(store: Store) -> None:
    # GIVEN tasks PROCESSING on servers A and B, and one that finished on A
    a = put_online_server(store)
    b = put_online_server(store)
    on_a: list[Task] = []
    on_b: list[Task] = []
    for i in range(6):
        task = put_pending(store)
        target = a if i % 2 == 0 else b
        claimed = store.claim_task(task, claim_changes(task, target.id))
        (on_a if target is a else on_b).append(claimed)
    finished = on_a.pop()
    store.release_task(finished, completed_changes())
    put_pending(store, server_id=a.id)  # PENDING, but naming A

    # WHEN A's PROCESSING tasks are listed
    listed = store.processing_on_server(a.id)

    # THEN they are exactly those still PROCESSING there
    assert sorted(t.id for t in listed) == sorted(t.id for t in on_a)
    by_id = {t.id: t for t in on_a}
    for got in listed:
        assert_same(got, by_id[got.id])
    assert sorted(t.id for t in store.processing_on_server(b.id)) == sorted(t.id for t in on_b)


def test_processing_on_server_respects_the_limit(store: Store) -> None:
    server = put_online_server(store)
    for _ in range(3):
        task = put_pending(store)
        store.claim_task(task, claim_changes(task, server.id))
    assert len(store.processing_on_server(server.id, limit=2)) == 2


def test_processing_on_an_unknown_server_is_empty(store: Store) -> None:
    assert store.processing_on_server("srv-none") == []


def test_count_pending_counts_the_backlog_only(store: Store) -> None:
    # GIVEN three PENDING tasks, one of which is then cancelled
    tasks = [put_pending(store) for _ in range(3)]
    assert store.count_pending() == 3

    # WHEN one leaves PENDING
    store.update_task(tasks[0].id, {"status": TaskStatus.CANCELLED}, from_status={TaskStatus.PENDING})

    # THEN it is no longer counted
    assert store.count_pending() == 2

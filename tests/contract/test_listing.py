"""Store.list_tasks (newest first, filtered, a page at a time) and Store.pending_by_priority,
on every adapter."""

from __future__ import annotations

from core.domain.models import Task, TaskStatus
from core.ports.storage import Store, TaskPage, position

from .factories import NOW, claim_changes, completed_changes, put_online_server, put_pending

STATUSES = list(TaskStatus)


def newest_first(tasks: list[Task]) -> list[str]:
    return [t.id for t in sorted(tasks, key=lambda t: (t.created_at, t.id), reverse=True)]


def read_all(store: Store, limit: int, **filters: object) -> tuple[list[str], list[int]]:
    """Every page in turn: the ids in order, and each page's size."""
    ids: list[str] = []
    sizes: list[int] = []
    before = None
    for _ in range(100):
        page = store.list_tasks(limit, before=before, **filters)  # type: ignore[arg-type]
        assert len(page.tasks) <= limit
        ids += [t.id for t in page.tasks]
        sizes.append(len(page.tasks))
        if page.after is None:
            return ids, sizes
        before = page.after
    raise AssertionError("the pages never ended")


def test_all_tasks_come_newest_first_across_every_status_a_page_at_a_time(store: Store) -> None:
    # GIVEN tasks in every status, created at shuffled times, two of them at the same instant
    created = [NOW + 50, NOW + 10, NOW + 30, NOW + 30, NOW + 20, NOW + 60, NOW, NOW + 40]
    tasks = [
        put_pending(store, created_at=at, status=STATUSES[i % len(STATUSES)], owner=f"u{i % 2}")
        for i, at in enumerate(created)
    ]

    # WHEN they are read three at a time
    ids, sizes = read_all(store, 3)

    # THEN every task comes once, newest first (ties by id, descending), in full pages
    assert ids == newest_first(tasks)
    assert sizes == [3, 3, 2]


def test_a_page_holds_the_tasks_as_stored_but_their_bulky_fields(store: Store) -> None:
    task = put_pending(store, created_at=NOW + 5, payload={"big": "x" * 1000}, progress=0)
    (listed,) = store.list_tasks(10).tasks
    assert listed.to_summary() == task.to_summary()
    assert listed.payload in ({}, task.payload)  # an adapter may leave it out


def test_a_page_that_ends_exactly_at_the_last_task_says_there_is_no_more(store: Store) -> None:
    tasks = [put_pending(store, created_at=NOW + i) for i in range(4)]
    page = store.list_tasks(4)
    assert [t.id for t in page.tasks] == newest_first(tasks)
    assert page.after is None
    shorter = store.list_tasks(3)
    assert shorter.after == position(shorter.tasks[-1])


def test_one_status_only(store: Store) -> None:
    # GIVEN tasks of several statuses
    tasks = [put_pending(store, created_at=NOW + i, status=STATUSES[i % 3]) for i in range(9)]

    # WHEN only the COMPLETED ones are read, two at a time
    ids, _ = read_all(store, 2, status=TaskStatus.COMPLETED)

    # THEN exactly those come, newest first
    assert ids == newest_first([t for t in tasks if t.status is TaskStatus.COMPLETED])
    assert store.list_tasks(5, status=TaskStatus.TIMEOUT) == TaskPage([], None)


def test_one_owner_only_and_one_owner_in_one_status(store: Store) -> None:
    # GIVEN alice's and bob's tasks in several statuses
    tasks = [
        put_pending(store, created_at=NOW + i, owner=("alice", "bob")[i % 2], status=STATUSES[i % 4])
        for i in range(16)
    ]
    alice = [t for t in tasks if t.owner == "alice"]

    # WHEN alice's are read, all and then only her COMPLETED ones
    every, _ = read_all(store, 3, owner="alice")
    completed, _ = read_all(store, 1, owner="alice", status=TaskStatus.COMPLETED)

    # THEN only hers come, newest first
    assert every == newest_first(alice)
    assert completed == newest_first([t for t in alice if t.status is TaskStatus.COMPLETED])
    assert len(completed) == 4  # the filter kept some, and left some out
    assert store.list_tasks(5, owner="nobody") == TaskPage([], None)


def test_a_task_is_listed_under_the_status_it_moved_to(store: Store) -> None:
    # GIVEN a PENDING task, claimed by a server, then completed
    server = put_online_server(store)
    task = put_pending(store, created_at=NOW + 1)
    claimed = store.claim_task(task, claim_changes(task, server.id))
    assert [t.id for t in store.list_tasks(5, status=TaskStatus.PROCESSING).tasks] == [task.id]
    store.release_task(claimed, completed_changes())

    # THEN it has left the PENDING and PROCESSING listings for the COMPLETED one
    assert store.list_tasks(5, status=TaskStatus.PENDING).tasks == []
    assert store.list_tasks(5, status=TaskStatus.PROCESSING).tasks == []
    (done,) = store.list_tasks(5, status=TaskStatus.COMPLETED).tasks
    assert (done.id, done.status, done.progress) == (task.id, TaskStatus.COMPLETED, 100)
    # AND a retry brings it back to PENDING
    store.update_task(task.id, {"status": TaskStatus.PENDING}, from_status={TaskStatus.COMPLETED})
    assert [t.id for t in store.list_tasks(5, status=TaskStatus.PENDING).tasks] == [task.id]
    assert store.list_tasks(5, status=TaskStatus.COMPLETED).tasks == []


def test_pending_by_priority_counts_the_backlog_per_priority(store: Store) -> None:
    # GIVEN PENDING tasks of priorities 0, 7 and 10, and finished or running ones of priority 3
    for priority, count in ((0, 2), (7, 3), (10, 1)):
        for _ in range(count):
            put_pending(store, priority=priority)
    put_pending(store, priority=3, status=TaskStatus.COMPLETED)
    server = put_online_server(store)
    running = put_pending(store, priority=3)
    store.claim_task(running, claim_changes(running, server.id))

    # THEN only the PENDING ones count, per priority
    assert store.pending_by_priority() == {0: 2, 7: 3, 10: 1}
    assert store.count_pending() == 6


def test_pending_by_priority_of_an_empty_queue_is_empty(store: Store) -> None:
    assert store.pending_by_priority() == {}

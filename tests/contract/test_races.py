"""Races: many threads, released together by a barrier, on the same item. Every conditional
write has exactly one winner; slot counts never drift from the tasks PROCESSING.

Each race runs with all threads sharing one Store ("shared": one process, or one Lambda
container) and with a Store per thread on the same data ("separate": several processes or
Lambda instances; under moto they share one boto3 client, which is thread-safe).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.domain.models import Task, TaskStatus
from core.errors import NoCapacityError, StaleWriteError
from core.ports.storage import IdempotencyRecord, Store

from .conftest import StoreFactory
from .factories import (
    NOW,
    active_tasks,
    assert_same,
    assert_turns_cycle,
    claim_changes,
    completed_changes,
    put_online_server,
    put_pending,
    run_concurrently,
    split,
)

StoresFor = Callable[[int], list[Store]]


@pytest.fixture(params=["shared", "separate"])
def stores_for(request: pytest.FixtureRequest, store: Store, open_store: StoreFactory) -> StoresFor:
    def stores(n: int) -> list[Store]:
        if request.param == "shared":
            return [store] * n
        return [open_store() for _ in range(n)]

    return stores


def test_only_one_of_many_identical_transitions_wins(store: Store, stores_for: StoresFor) -> None:
    n = 16
    stores = stores_for(n)
    for _ in range(3):  # a few rounds: a race that is lost by luck once is rarely lost thrice
        # GIVEN a PENDING task and 16 callers that all read it PENDING
        task = put_pending(store)

        # WHEN they all cancel it at once, each with its own message
        def cancel(i: int, task: Task = task) -> Task:
            return stores[i].update_task(
                task.id,
                {"status": TaskStatus.CANCELLED, "message": f"caller {i}"},
                from_status={TaskStatus.PENDING},
            )

        outcomes = run_concurrently(n, cancel)

        # THEN exactly one wins, the rest see the cancelled task, and the winner's write stands
        wins, stale = split(outcomes, StaleWriteError)
        assert (len(wins), len(stale)) == (1, n - 1)
        winner = wins[0]
        stored = store.get_task(task.id)
        assert stored is not None
        assert stored.message == f"caller {winner.index}"
        assert_same(stored, winner.value)
        for loser in stale:
            assert isinstance(loser.error, StaleWriteError)
            current = loser.error.current
            assert isinstance(current, Task) and current.status is TaskStatus.CANCELLED


def test_claims_on_one_server_never_exceed_max_concurrent(store: Store, stores_for: StoresFor) -> None:
    # GIVEN a server with k=5 slots and 20 PENDING tasks
    n, k = 20, 5
    server = put_online_server(store, max_concurrent=k)
    tasks = [put_pending(store) for _ in range(n)]
    stores = stores_for(n)

    # WHEN 20 dispatchers each claim a different task on that server at once
    outcomes = run_concurrently(
        n, lambda i: stores[i].claim_task(tasks[i], claim_changes(tasks[i], server.id))
    )

    # THEN exactly k win and the rest find no capacity
    wins, full = split(outcomes, NoCapacityError)
    assert (len(wins), len(full)) == (k, n - k)

    # AND the slot count is k, the number of tasks PROCESSING there
    assert active_tasks(store, server.id) == k
    processing = store.processing_on_server(server.id)
    assert sorted(t.id for t in processing) == sorted(w.value.id for w in wins)

    # AND every refused task is untouched
    for lost in full:
        assert_same(store.get_task(tasks[lost.index].id), tasks[lost.index])


def test_only_one_claim_of_the_same_task_wins(store: Store, stores_for: StoresFor) -> None:
    # GIVEN one PENDING task and a roomy server
    n = 16
    server = put_online_server(store, max_concurrent=100)
    task = put_pending(store)
    stores = stores_for(n)

    # WHEN 16 dispatchers (a duplicated queue message) claim it at once
    outcomes = run_concurrently(
        n,
        lambda i: stores[i].claim_task(
            task, {**claim_changes(task, server.id), "message": f"dispatcher {i}"}
        ),
    )

    # THEN exactly one wins, the others lose the task, and exactly one slot is taken
    wins, stale = split(outcomes, StaleWriteError)
    assert (len(wins), len(stale)) == (1, n - 1)
    assert active_tasks(store, server.id) == 1
    stored = store.get_task(task.id)
    assert stored is not None
    assert stored.status is TaskStatus.PROCESSING
    assert stored.message == f"dispatcher {wins[0].index}"


def test_only_one_claim_of_the_same_task_wins_across_servers(store: Store, stores_for: StoresFor) -> None:
    # GIVEN one PENDING task and 4 roomy servers
    n = 16
    servers = [put_online_server(store, max_concurrent=100) for _ in range(4)]
    task = put_pending(store)
    stores = stores_for(n)

    # WHEN 16 dispatchers claim it at once, each on one of the servers
    outcomes = run_concurrently(
        n, lambda i: stores[i].claim_task(task, claim_changes(task, servers[i % 4].id))
    )

    # THEN one wins, and only the winner's server has a slot taken
    wins, _stale = split(outcomes, StaleWriteError)
    assert len(wins) == 1
    winner_server = servers[wins[0].index % 4].id
    assert {s.id: active_tasks(store, s.id) for s in servers} == {
        s.id: int(s.id == winner_server) for s in servers
    }


def test_claim_racing_cancel_has_one_winner_and_no_leaked_slot(store: Store, stores_for: StoresFor) -> None:
    n = 16
    server = put_online_server(store, max_concurrent=100)
    stores = stores_for(n)
    for _ in range(3):
        # GIVEN a PENDING task that 8 dispatchers claim while 8 callers cancel it
        task = put_pending(store)
        before = active_tasks(store, server.id)

        def act(i: int, task: Task = task) -> str:
            if i % 2:
                stores[i].claim_task(task, claim_changes(task, server.id))
                return "claim"
            stores[i].update_task(task.id, {"status": TaskStatus.CANCELLED}, from_status={TaskStatus.PENDING})
            return "cancel"

        # WHEN they race
        wins, _stale = split(run_concurrently(n, act), StaleWriteError)

        # THEN exactly one wins, and a slot is taken only if the claim won
        assert len(wins) == 1
        stored = store.get_task(task.id)
        assert stored is not None
        if wins[0].value == "claim":
            assert stored.status is TaskStatus.PROCESSING
            assert active_tasks(store, server.id) == before + 1
        else:
            assert stored.status is TaskStatus.CANCELLED
            assert active_tasks(store, server.id) == before
    assert active_tasks(store, server.id) == len(store.processing_on_server(server.id))


def test_only_one_of_many_duplicate_releases_wins(store: Store, stores_for: StoresFor) -> None:
    # GIVEN a task PROCESSING on a server that also runs another task
    n = 16
    server = put_online_server(store)
    task, other = put_pending(store), put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, server.id))
    store.claim_task(other, claim_changes(other, server.id))
    stores = stores_for(n)

    # WHEN 16 copies of its completion callback release it at once
    outcomes = run_concurrently(
        n,
        lambda i: stores[i].release_task(
            claimed,
            completed_changes({"copy": i}),
            server_counters={"tasks_processed": 1, "success_count": 1},
        ),
    )

    # THEN exactly one wins, one slot is freed, and the counters are added once
    wins, stale = split(outcomes, StaleWriteError)
    assert (len(wins), len(stale)) == (1, n - 1)
    after = store.get_server(server.id)
    assert after is not None
    assert (after.active_tasks, after.tasks_processed, after.success_count) == (1, 1, 1)
    stored = store.get_task(task.id)
    assert stored is not None
    assert stored.result == {"copy": wins[0].index}


def test_concurrent_releases_and_claims_keep_the_slot_count_exact(
    store: Store, stores_for: StoresFor
) -> None:
    # GIVEN a full server (4 slots, 4 tasks PROCESSING)
    k = 4
    server = put_online_server(store, max_concurrent=k)
    running: list[Task] = []
    for _ in range(k):
        task = put_pending(store)
        running.append(store.claim_task(task, claim_changes(task, server.id)))
    released = 0

    for round_no in range(2):
        # WHEN every running task is released while 2k new tasks are claimed, all at once
        jobs: list[tuple[str, Task]] = [("release", t) for t in running] + [
            ("claim", put_pending(store, queued_at=NOW + round_no)) for _ in range(2 * k)
        ]
        stores = stores_for(len(jobs))

        def act(i: int, jobs: list[tuple[str, Task]] = jobs, stores: list[Store] = stores) -> Task:
            kind, task = jobs[i]
            if kind == "release":
                return stores[i].release_task(
                    task, completed_changes(), server_counters={"tasks_processed": 1}
                )
            return stores[i].claim_task(task, claim_changes(task, server.id))

        wins, full = split(run_concurrently(len(jobs), act), NoCapacityError)

        # THEN every release wins, each claim wins or finds no capacity, and the slot count
        # is exactly the number of tasks PROCESSING there, never above k
        assert all(jobs[o.index][0] == "claim" for o in full)
        claims = [o.value for o in wins if jobs[o.index][0] == "claim"]
        released += len(wins) - len(claims)
        assert len(wins) - len(claims) == len(running)
        processing = store.processing_on_server(server.id)
        assert sorted(t.id for t in processing) == sorted(t.id for t in claims)
        assert active_tasks(store, server.id) == len(processing) <= k
        running = claims

    after = store.get_server(server.id)
    assert after is not None
    assert after.tasks_processed == released


# -- servers ------------------------------------------------------------------------------


def test_only_one_server_update_per_version_wins(store: Store, stores_for: StoresFor) -> None:
    # GIVEN a server at version 0 and 16 health checkers that read it
    n = 16
    server = put_online_server(store)
    stores = stores_for(n)

    # WHEN they all write at version 0
    outcomes = run_concurrently(
        n,
        lambda i: stores[i].update_server(
            server.id, {"consecutive_failures": i, "name": f"checker {i}"}, version=0
        ),
    )

    # THEN exactly one wins and the server is at version 1 with its write
    wins, stale = split(outcomes, StaleWriteError)
    assert (len(wins), len(stale)) == (1, n - 1)
    stored = store.get_server(server.id)
    assert stored is not None
    assert (stored.version, stored.name) == (1, f"checker {wins[0].index}")


def test_only_one_reconciliation_of_a_slot_count_wins(store: Store, stores_for: StoresFor) -> None:
    # GIVEN a server with a drifted count of 7
    n = 16
    server = put_online_server(store, active_tasks=7)
    stores = stores_for(n)

    # WHEN 16 sweepers each set their own value (none of them 7), expecting 7
    outcomes = run_concurrently(n, lambda i: stores[i].set_active_tasks(server.id, 100 + i, expected=7))

    # THEN exactly one succeeds and its value stands
    (wins,) = split(outcomes)
    succeeded = [o.index for o in wins if o.value is True]
    assert len(succeeded) == 1
    assert active_tasks(store, server.id) == 100 + succeeded[0]


# -- sequences, counters, rate windows, idempotency ---------------------------------------


def test_concurrent_next_in_sequence_turns_lose_none(store: Store, stores_for: StoresFor) -> None:
    # GIVEN 16 threads sharing sequence "rr"
    n, per_thread = 16, 4
    stores = stores_for(n)

    # WHEN each takes 4 numbers at once
    outcomes = run_concurrently(n, lambda i: [stores[i].next_in_sequence("rr") for _ in range(per_thread)])

    # THEN the 64 turns are exactly 1..64, each once (one counter), or cycle evenly (several)
    (wins,) = split(outcomes)
    assert_turns_cycle([v for o in wins for v in o.value], store.sequence_counters)


def test_concurrent_hits_on_one_rate_window_count_exactly_1_to_n(store: Store, stores_for: StoresFor) -> None:
    # GIVEN 24 requests of one principal in one window
    n = 24
    stores = stores_for(n)

    # WHEN they are counted at once
    outcomes = run_concurrently(
        n, lambda i: stores[i].hit_rate_window("alice#default#28333333", expires_at=1_700_000_120)
    )

    # THEN each got a distinct count and together they are 1..24
    (wins,) = split(outcomes)
    assert sorted(o.value for o in wins) == list(range(1, n + 1))


def test_concurrent_add_counters_lose_no_increment(store: Store, stores_for: StoresFor) -> None:
    # GIVEN 16 dispatchers finishing tasks in the same hour
    n = 16
    stores = stores_for(n)

    # WHEN each adds to the same bucket at once
    run_concurrently(
        n,
        lambda i: stores[i].add_counters("stats#2024-05-01#13", {"completed": 1, "ms": i}, expires_at=10_000),
    )

    # THEN the bucket holds every increment
    assert store.get_counters(["stats#2024-05-01#13"]) == {
        "stats#2024-05-01#13": {"completed": n, "ms": sum(range(n))}
    }


def test_concurrent_retries_of_one_counter_batch_count_it_once(store: Store, stores_for: StoresFor) -> None:
    # GIVEN 8 deliveries of the same stream batch, handled at once
    n = 8
    stores = stores_for(n)
    batch = {"hour:2024-05-01T13": {"completed": 2}, "server:2024-05-01:gpu-1": {"completed": 2}}

    # WHEN each adds it
    outcomes = run_concurrently(
        n, lambda i: stores[i].add_counters_once("batch-7", batch, expires_at=10_000, now_s=1_000)
    )

    # THEN exactly one added it, and it counts once
    (wins,) = split(outcomes)
    assert sorted(o.value for o in wins) == [False] * (n - 1) + [True]
    assert store.get_counters(list(batch)) == batch


def test_concurrent_put_idempotency_of_one_key_has_one_winner(store: Store, stores_for: StoresFor) -> None:
    # GIVEN 16 retries of one POST with the same Idempotency-Key
    n = 16
    stores = stores_for(n)
    records = [
        IdempotencyRecord(key="idem-1", body_hash="h", task_id=f"task-{i}", expires_at=90_000)
        for i in range(n)
    ]

    # WHEN they all put their record at once
    outcomes = run_concurrently(n, lambda i: stores[i].put_idempotency(records[i], now_s=1_000))

    # THEN exactly one stored its record, and every other got that record back
    (wins,) = split(outcomes)
    first = [o.index for o in wins if o.value is None]
    assert len(first) == 1
    winner = records[first[0]]
    assert all(o.value == winner for o in wins if o.index != first[0])

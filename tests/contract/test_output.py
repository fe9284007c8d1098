"""Streamed output and per-attempt history, on every adapter: chunks are numbered in order,
stored only with the task still PROCESSING on that attempt, counted on the task in the same
write, and a race for the next index has exactly one winner."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain import attempts
from core.domain.models import AttemptRecord, OutputChunk, Task, TaskStatus
from core.errors import StaleWriteError
from core.ports.storage import Store
from tests.contract.factories import (
    NOW,
    assert_same,
    claim_changes,
    completed_changes,
    put_online_server,
    put_pending,
    run_concurrently,
    split,
)


def running(store: Store) -> Task:
    server = put_online_server(store)
    task = put_pending(store)
    changes = claim_changes(task, server.id) | {"history": attempts.opened(task, server.id, NOW + 10)}
    return store.claim_task(task, changes)


def chunk(task: Task, data: Any, at: int = NOW + 20) -> OutputChunk:
    return OutputChunk(
        task_id=task.id,
        index=task.output_chunks,
        data=data,
        attempt=task.attempts,
        created_at=at,
        expires_at=at // 1000 + 86_400,
    )


def test_chunks_are_numbered_from_zero_and_read_back_in_order_with_their_json(store: Store) -> None:
    # GIVEN a running task
    task = running(store)
    values: list[Any] = [{"frame": 1, "score": 0.25}, "text", [1, 2.5, None], 7, None, True]

    # WHEN its backend appends six chunks of any JSON
    for value in values:
        task = store.append_output(task, chunk(task, value), size=10)

    # THEN they are numbered 0-5, read back exactly, and counted on the task
    got = store.task_output(task.id)
    assert [c.index for c in got] == list(range(6))
    assert_same([c.data for c in got], values)
    assert (got[0].attempt, got[0].created_at) == (1, NOW + 20)
    stored = store.get_task(task.id)
    assert stored is not None and (stored.output_chunks, stored.output_bytes) == (6, 60)
    assert_same(task, stored)
    # AND a reader resumes after any index, a page at a time
    assert [c.index for c in store.task_output(task.id, after=3)] == [4, 5]
    assert [c.index for c in store.task_output(task.id, after=0, limit=2)] == [1, 2]
    assert store.task_output(task.id, after=5) == []


def test_the_task_read_never_carries_its_chunks(store: Store) -> None:
    # GIVEN a task with output, finished with a result
    task = running(store)
    for n in range(3):
        task = store.append_output(task, chunk(task, {"n": n}), size=8)
    done = store.release_task(task, completed_changes({"answer": 42}))

    # THEN GET reads the task as written, and its chunks stay readable
    assert_same(store.get_task(task.id), done)
    assert len(store.task_output(task.id)) == 3


@pytest.mark.parametrize("how", ["finished", "requeued", "stale count"])
def test_no_chunk_is_stored_once_the_writer_is_out_of_date(store: Store, how: str) -> None:
    # GIVEN a running task with one chunk, as a backend last read it
    task = running(store)
    seen = store.append_output(task, chunk(task, "first"), size=5)
    if how == "finished":
        store.release_task(seen, completed_changes())
    elif how == "requeued":
        store.release_task(seen, {"status": TaskStatus.PENDING, "server_id": None, "updated_at": NOW + 30})
    else:
        seen = task  # read before the first chunk: its count is out of date

    # WHEN it appends with that view
    with pytest.raises(StaleWriteError) as raised:
        store.append_output(seen, chunk(seen, "late"), size=4)

    # THEN nothing is stored, and the error carries the task as it is
    current = raised.value.current
    assert isinstance(current, Task) and current.id == task.id
    assert [c.data for c in store.task_output(task.id)] == ["first"]
    assert current.output_chunks == 1


def test_an_unknown_task_takes_no_chunk(store: Store) -> None:
    ghost = Task(
        id="task-ghost",
        owner="alice",
        type="t",
        priority=1,
        payload={},
        status=TaskStatus.PROCESSING,
        server_id="srv",
        attempts=1,
        created_at=NOW,
        updated_at=NOW,
        queued_at=NOW,
    )
    with pytest.raises(StaleWriteError) as raised:
        store.append_output(ghost, chunk(ghost, 1), size=1)
    assert raised.value.current is None
    assert store.task_output(ghost.id) == []


def test_racing_appends_for_the_same_index_have_one_winner(open_store: Any) -> None:
    # GIVEN a running task that eight writers read at once
    first = open_store()
    task = running(first)
    stores = [open_store() for _ in range(8)]

    # WHEN each appends its chunk as index 0
    outcomes = run_concurrently(8, lambda i: stores[i].append_output(task, chunk(task, i), size=1))

    # THEN exactly one chunk is stored and counted; the others are told
    wins, stale = split(outcomes, StaleWriteError)
    assert len(wins) == 1 and len(stale) == 7
    (only,) = first.task_output(task.id)
    assert only.data == wins[0].index
    stored = first.get_task(task.id)
    assert stored is not None and (stored.output_chunks, stored.output_bytes) == (1, 1)


def test_history_is_written_with_the_claim_and_the_release(store: Store) -> None:
    # GIVEN a task claimed (its history opened in the same write)
    task = running(store)
    assert_same(
        store.get_task(task.id).history,  # type: ignore[union-attr]
        [AttemptRecord(attempt=1, server_id=task.server_id or "", started_at=NOW + 10)],
    )

    # WHEN the attempt fails and the task goes back to the queue
    changes = {
        "status": TaskStatus.PENDING,
        "server_id": None,
        "updated_at": NOW + 40,
        "error": "HTTP 500 from srv",
        "history": attempts.closed(task, NOW + 40, attempts.FAILED, "HTTP 500 from srv"),
    }
    store.release_task(task, changes)

    # THEN the entry is closed with its outcome, error and end
    stored = store.get_task(task.id)
    assert stored is not None
    assert_same(
        stored.history,
        [
            AttemptRecord(
                attempt=1,
                server_id=task.server_id or "",
                started_at=NOW + 10,
                ended_at=NOW + 40,
                outcome="failed",
                error="HTTP 500 from srv",
            )
        ],
    )

"""What the in-memory store keeps beyond the contract suite: isolation of what it hands out,
writes that go together or not at all, and data shared by several instances."""

from __future__ import annotations

import pytest

from core.domain.models import ServerStatus, TaskStatus
from core.errors import NoCapacityError, StaleWriteError
from core.local.memory import MemoryData, MemoryStore
from tests.contract.factories import NOW, claim_changes, make_server, make_task


def test_a_returned_task_is_a_copy_and_changing_it_changes_nothing_stored() -> None:
    # GIVEN a stored task, read back
    store = MemoryStore()
    task = make_task(payload={"prompt": "a cat", "steps": [1, 2]})
    store.put_task(task)
    read = store.get_task(task.id)
    assert read is not None

    # WHEN the caller changes what it read and what it passed in
    read.payload["prompt"] = "a dog"
    task.payload["steps"].append(3)

    # THEN the stored task is as written
    again = store.get_task(task.id)
    assert again is not None and again.payload == {"prompt": "a cat", "steps": [1, 2]}


def test_a_claim_whose_value_does_not_convert_takes_no_slot_and_moves_no_task() -> None:
    # GIVEN a pending task and a server with a free slot
    store = MemoryStore()
    server, task = make_server(max_concurrent=1), make_task()
    store.put_server(server)
    store.put_task(task)

    # WHEN a claim carries a deadline that is not an integer
    changes = claim_changes(task, server.id) | {"deadline": "soon"}
    with pytest.raises(Exception, match="deadline"):
        store.claim_task(task, changes)

    # THEN neither the task nor the slot moved, and a proper claim still succeeds
    stored_task, stored_server = store.get_task(task.id), store.get_server(server.id)
    assert stored_task is not None and stored_task.status is TaskStatus.PENDING
    assert stored_server is not None and stored_server.active_tasks == 0
    store.claim_task(task, claim_changes(task, server.id))
    stored_server = store.get_server(server.id)
    assert stored_server is not None and stored_server.active_tasks == 1


def test_instances_on_one_data_see_each_others_writes_and_lose_races_to_them() -> None:
    # GIVEN two stores on the same data, as two processes on one database file
    data = MemoryData()
    first, second = MemoryStore(data), MemoryStore(data)
    server, task = make_server(max_concurrent=1), make_task()
    first.put_server(server)
    first.put_task(task)

    # WHEN one claims the task
    second.claim_task(task, claim_changes(task, server.id))

    # THEN the other sees it claimed, and its own claim of the same attempt loses
    seen = first.get_task(task.id)
    assert seen is not None and seen.status is TaskStatus.PROCESSING
    with pytest.raises(StaleWriteError) as lost:
        first.claim_task(task, claim_changes(task, server.id))
    assert isinstance(lost.value.current, type(task))
    # AND a store on other data sees nothing
    assert MemoryStore().get_task(task.id) is None


def test_a_claim_on_a_server_not_online_is_refused_without_a_write() -> None:
    store = MemoryStore()
    server, task = make_server(status=ServerStatus.MAINTENANCE), make_task()
    store.put_server(server)
    store.put_task(task)

    with pytest.raises(NoCapacityError):
        store.claim_task(task, claim_changes(task, server.id))

    stored = store.get_task(task.id)
    assert stored is not None and stored.status is TaskStatus.PENDING and stored.updated_at == NOW

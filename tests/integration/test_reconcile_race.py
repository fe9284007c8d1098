"""Slot reconciliation against a claim and its release that land while it counts.

GIVEN the sweeper read a server with no slot taken, WHEN a task is claimed there (listed as
PROCESSING) and released again before the sweeper writes its count, THEN the sweeper writes
nothing: the count went up and back down, and setting it to the task it counted would leak a
slot for good. (Seen on `taskgate dev --aws` as a slot still taken after every task finished.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.domain.models import Task
from core.services import sweeper
from handlers.local import app as local
from tests.contract.factories import claim_changes, completed_changes, make_server, make_task


def test_a_claim_and_release_during_reconciliation_leave_the_count_alone(tmp_path: Path) -> None:
    ctx = local.build_context(str(tmp_path / "race.db"), reconcile_grace_ms=0)
    store = ctx.store
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)
    seen = store.get_server(server.id)
    assert seen is not None and seen.active_tasks == 0

    claimed: dict[str, Task] = {}
    list_processing, get_task = store.processing_on_server, store.get_task

    def claim_then_list(server_id: str, limit: int = 1000) -> list[Task]:
        claimed["task"] = store.claim_task(task, claim_changes(task, server.id))
        return list_processing(server_id, limit)

    def read_then_release(task_id: str) -> Any:
        current = get_task(task_id)  # PROCESSING: the sweeper counts it as running
        if task_id == task.id and "task" in claimed:
            store.release_task(claimed.pop("task"), completed_changes({"ok": True}))
        return current

    store.processing_on_server = claim_then_list  # type: ignore[method-assign]
    store.get_task = read_then_release  # type: ignore[method-assign]

    fixed = sweeper.reconcile_slots(ctx, seen, ctx.now())

    assert fixed is False
    after = get_task(task.id)
    assert after is not None and after.status.value == "COMPLETED"
    current = store.get_server(server.id)
    assert current is not None and current.active_tasks == 0

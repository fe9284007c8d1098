"""Why a task waits, and failover that learns, end to end on `taskgate serve` and on
`taskgate dev --aws`: GET of a PENDING task gives each `queue.reason` as the fleet makes it
true, `GET /api/stats/queue` breaks the backlog down by capability set, and a dead backend
(connection refused) costs a task one attempt, not all three, and is then ejected.

The gateway sweeps only at start (SWEEP_INTERVAL of an hour): nothing but the test's own
actions wakes the dispatcher, active health checks do not run after a server's first, so what
ejects the dead backend is passive outlier detection alone. Backoffs are 1-2 s, long enough to
read a task while it backs off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .fleet import DEPLOYMENTS, Fleet, Gateway, Mock, start_gateway
from .harness import unique

SETTINGS: dict[str, int | str] = {
    "SWEEP_INTERVAL": 3_600_000,
    "RETRY_BASE_DELAY": 2_000,
    "RETRY_MAX_DELAY": 2_000,
    "MAX_ATTEMPTS": 3,
    "OUTLIER_CONSECUTIVE_FAILURES": 3,
    "OUTLIER_BASE_EJECTION": 60_000,
}


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("reasons"), request.param, spares=2, **SETTINGS) as started:
        yield started


@pytest.fixture
def fleet(gateway: Gateway) -> Iterator[Fleet]:
    with Fleet(gateway) as made:
        try:
            yield made
        finally:
            # Nothing of this test may stay queued: a drain would look at it in the next test.
            for task_id in made.task_ids:
                if made.task(task_id)["status"] in ("PENDING", "PROCESSING"):
                    made.cancel(task_id)


def queue_of(fleet: Fleet, task_id: str, reason: str) -> dict[str, Any]:
    """The task's `queue` once it gives `reason` (the fleet view may be FLEET_CACHE old)."""
    task = fleet.eventually(
        lambda: fleet.task(task_id),
        lambda t: t["status"] == "PENDING" and t.get("queue", {}).get("reason") == reason,
        timeout=5,
        what=f"queue.reason {reason}",
    )
    assert task["capabilities"], task
    queue: dict[str, Any] = task["queue"]
    assert "http" not in queue["details"], queue  # names servers, never their URLs
    return queue


def backlog_row(fleet: Fleet, capabilities: list[str]) -> dict[str, Any]:
    summary = fleet.api.get("/api/stats/queue", token=fleet.owner).ok()
    rows = [row for row in summary["backlog"] if row["capabilities"] == sorted(capabilities)]
    assert len(rows) == 1, summary["backlog"]
    return dict(rows[0])


def test_no_capable_server_names_the_missing_capability(fleet: Fleet) -> None:
    # GIVEN a server with this test's capability only
    fleet.add(Mock())
    missing = unique("tpu")

    # WHEN two tasks need a capability nobody has
    ids = [fleet.submit(capabilities=[fleet.capability, missing]) for _ in range(2)]

    # THEN each says so, naming it, and the queue summary counts them under that set
    queue = queue_of(fleet, ids[0], "no_capable_server")
    assert queue["details"] == f"no registered server has `{missing}`"
    row = backlog_row(fleet, [fleet.capability, missing])
    assert (row["count"], row["reason"]) == (2, "no_capable_server")
    assert row["details"].startswith(f"2 tasks need `{min(fleet.capability, missing)}`")
    assert fleet.task(ids[1])["attempts"] == 0


def test_no_server_online_names_the_servers_and_their_state(fleet: Fleet) -> None:
    # GIVEN the only capable server in maintenance
    (backend,) = fleet.add(Mock())
    body = {"maintenance": True, "reason": "driver update"}
    fleet.api.post(f"/api/servers/{backend.server_id}/maintenance", json=body, token=fleet.api.admin).ok()

    # WHEN a task is submitted
    task_id = fleet.submit()

    # THEN it waits with no server online, saying which server and why
    queue = queue_of(fleet, task_id, "no_server_online")
    assert f"{backend.server_id} in maintenance (driver update)" in queue["details"]
    assert backlog_row(fleet, [fleet.capability])["reason"] == "no_server_online"
    assert backend.received(task_id) == 0


def test_capacity_full_then_dispatching_when_a_slot_is_free(fleet: Fleet) -> None:
    # GIVEN one slot, taken by a task the backend works on for a minute
    (backend,) = fleet.add(Mock(mode="async", delay_ms=60_000), max_concurrent=1)
    running = fleet.submit()
    fleet.wait_status(running, "PROCESSING")

    # WHEN another task is submitted, THEN every slot is taken
    waiting = fleet.submit()
    queue = queue_of(fleet, waiting, "capacity_full")
    assert "(1 of 1 slots)" in queue["details"]
    assert backlog_row(fleet, [fleet.capability])["reason"] == "capacity_full"

    # WHEN the slot count is freed behind the dispatcher's back (nothing wakes it: no sweep runs)
    assert fleet.gateway.store.set_active_tasks(backend.server_id, 0, expected=1)

    # THEN the waiting task says a slot is free and it is about to start, from now
    queue = queue_of(fleet, waiting, "dispatching")
    assert backend.server_id in queue["details"]
    assert queue["estimatedStartAt"] >= fleet.task(waiting)["createdAt"]


def test_backoff_after_a_failed_attempt(fleet: Fleet) -> None:
    # GIVEN a server that answers 500 to everything
    (backend,) = fleet.add(Mock(fail_rate=1.0))

    # WHEN a task fails its first attempt there
    task_id = fleet.submit()
    backend.wait_received(task_id)

    # THEN it waits out its backoff, and says after which server
    queue = queue_of(fleet, task_id, "backoff")
    assert queue["details"].endswith(f"(the last one, on server {backend.server_id}, did not finish)"), queue
    assert fleet.task(task_id)["attempts"] == 1


def test_a_dead_backend_costs_one_attempt_then_is_ejected(fleet: Fleet) -> None:
    # GIVEN two capable servers; the one tried first ("a-") is dead: connection refused
    dead, live = fleet.add(Mock(prefix="a"), Mock(prefix="b"))
    fleet.eventually(
        lambda: fleet.server(dead.server_id)["health"]["lastCheckAt"],
        lambda checked: checked is not None,
        timeout=10,
        what="the first health check",
    )  # taken while it was up: no later check runs, so only failed attempts can tell
    dead.kill()

    # WHEN a task is submitted
    first = fleet.submit()

    # THEN it completes on the live server at its second attempt, not after three on the dead one
    done = fleet.wait_terminal([first], timeout=15)[first]
    assert (done["status"], done["serverId"], done["attempts"]) == ("COMPLETED", live.server_id, 2), done

    # WHEN two more tasks fail there (three connection failures in a row); one at a time: under
    # least-connections a task dispatched while the dead server holds another's attempt goes
    # straight to the live one, and the dead server would see only two failures
    more: list[str] = []
    finished: dict[str, Any] = {}
    for _ in range(2):
        more.append(fleet.submit())
        finished |= fleet.wait_terminal(more[-1:], timeout=15)
    assert {(t["status"], t["serverId"]) for t in finished.values()} == {("COMPLETED", live.server_id)}

    # THEN the dead server is ejected: shown on the server, and the next tasks go straight to live
    ejected = fleet.server(dead.server_id)
    assert ejected["status"] == "online" and ejected["health"]["ejectedUntil"] is not None, ejected
    after = [fleet.submit() for _ in range(3)]
    for task in fleet.wait_terminal(after, timeout=10).values():
        assert (task["status"], task["serverId"], task["attempts"]) == ("COMPLETED", live.server_id, 1), task
    assert live.stats()["byTask"].keys() >= {first, *more, *after}

"""Dispatch end to end when things go missing: a capability no server has, a callback that
never comes, a backend killed mid-task, a slot count left wrong by a crash. Three gateways:
MAX_ATTEMPTS=1 (with a short QUEUE_TIMEOUT) where one loss ends the task, MAX_ATTEMPTS=2 where
it is retried, and RECONCILE_GRACE=0 where the sweeper repairs slot counts at once (elsewhere
the default grace keeps it from hiding a leak)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fleet import DEPLOYMENTS, Fleet, Gateway, Mock, start_gateway
from .harness import unique

TASK_TIMEOUT_MS = 1500


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def one_attempt(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("one-attempt")
    with start_gateway(tmp, request.param, spares=1, MAX_ATTEMPTS=1, QUEUE_TIMEOUT=1000) as gateway:
        yield gateway


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def two_attempts(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("two-attempts")
    with start_gateway(tmp, request.param, spares=2, MAX_ATTEMPTS=2, HEARTBEAT_TIMEOUT=1500) as gateway:
        yield gateway


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def reconciling(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with start_gateway(
        tmp_path_factory.mktemp("reconciling"), request.param, spares=1, RECONCILE_GRACE=0
    ) as gateway:
        yield gateway


@pytest.fixture
def strict(one_attempt: Gateway) -> Iterator[Fleet]:
    with Fleet(one_attempt) as fleet:
        yield fleet


@pytest.fixture
def lenient(two_attempts: Gateway) -> Iterator[Fleet]:
    with Fleet(two_attempts) as fleet:
        yield fleet


@pytest.fixture
def repairing(reconciling: Gateway) -> Iterator[Fleet]:
    with Fleet(reconciling) as fleet:
        yield fleet


def test_queue_timeout_names_the_missing_capability(strict: Fleet) -> None:
    fleet = strict
    fleet.add(Mock())  # capable of the fleet's capability, not of the one asked for
    missing = unique("gpu")
    task_id = fleet.submit(capabilities=[fleet.capability, missing])
    timed_out = fleet.wait_terminal(timeout=5)[task_id]
    assert timed_out["status"] == "TIMEOUT", timed_out
    assert timed_out["attempts"] == 0
    assert missing in timed_out["error"], timed_out["error"]
    assert timed_out["completedAt"] - timed_out["createdAt"] >= 1000
    fleet.assert_settled()


def test_a_lost_callback_times_out_after_the_task_timeout(strict: Fleet) -> None:
    fleet = strict
    (backend,) = fleet.add(Mock(mode="async", lose_callback_rate=1))
    task_id = fleet.submit(timeout=TASK_TIMEOUT_MS)
    timed_out = fleet.wait_terminal(timeout=6)[task_id]
    assert timed_out["status"] == "TIMEOUT", timed_out
    assert timed_out["attempts"] == 1
    assert timed_out["completedAt"] - timed_out["startedAt"] >= TASK_TIMEOUT_MS
    assert f"{TASK_TIMEOUT_MS} ms" in timed_out["error"], timed_out["error"]
    assert backend.stats()["lostCallbacks"] == 1
    fleet.assert_settled()


def test_a_lost_callback_is_retried_on_another_server(lenient: Fleet) -> None:
    fleet = lenient
    lossy, healthy = fleet.add(
        Mock("a-lossy", mode="async", lose_callback_rate=1), Mock("b-ok", mode="async", delay_ms=50)
    )
    task_id = fleet.submit(timeout=TASK_TIMEOUT_MS)
    done = fleet.wait_terminal(timeout=8)[task_id]
    assert (done["status"], done["serverId"], done["attempts"]) == ("COMPLETED", healthy.server_id, 2), done
    assert lossy.received(task_id) == 1
    assert done["completedAt"] - done["createdAt"] >= TASK_TIMEOUT_MS
    fleet.assert_settled()


def test_a_task_on_a_killed_server_completes_on_another(lenient: Fleet) -> None:
    fleet = lenient
    (victim,) = fleet.add(Mock("victim", mode="async", delay_ms=30_000))
    task_id = fleet.submit()
    running = fleet.wait_status(task_id, "PROCESSING")
    assert running["serverId"] == victim.server_id
    (survivor,) = fleet.add(Mock("survivor"))
    victim.wait_received(task_id)
    victim.kill()

    done = fleet.wait_terminal(timeout=10)[task_id]
    assert (done["status"], done["serverId"], done["attempts"]) == ("COMPLETED", survivor.server_id, 2), done
    assert fleet.server(victim.server_id)["status"] == "offline"
    fleet.assert_settled()


def test_a_leaked_slot_is_reconciled_by_the_sweeper(repairing: Fleet) -> None:
    """A crash between taking a slot and recording the task cannot happen (one atomic write);
    what it would leave, one slot too many, is put in the database directly."""
    fleet = repairing
    (backend,) = fleet.add(Mock(mode="async", delay_ms=20_000), max_concurrent=2, cancel=True)
    server_id = backend.server_id
    first = fleet.submit()
    fleet.wait_status(first, "PROCESSING")
    assert fleet.server(server_id)["activeTasks"] == 1
    assert fleet.gateway.store.set_active_tasks(server_id, 2, expected=1)

    fleet.eventually(
        lambda: fleet.server(server_id)["activeTasks"],
        lambda active: active == 1,
        timeout=2,
        what="activeTasks reconciled to the one PROCESSING task",
    )
    more = [fleet.submit() for _ in range(3)]
    fleet.wait_status(more[0], "PROCESSING", timeout=3)
    fleet.dispatcher_caught_up()  # would a third slot be handed out?
    statuses = [fleet.task(t)["status"] for t in more]
    assert statuses == ["PROCESSING", "PENDING", "PENDING"], statuses
    assert fleet.server(server_id)["activeTasks"] == 2
    assert backend.stats()["current"] == 2

    for task_id in [*reversed(more), first]:
        fleet.cancel(task_id)
    fleet.assert_settled()

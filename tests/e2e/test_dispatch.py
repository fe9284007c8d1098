"""Dispatch end to end: `taskgate serve` and mock backends as real processes on loopback.

One gateway serves the module; each test has its own backends, capability label and owner
(see fleet.py), and ends with the same checks: every task terminal, each received once per
attempt, every slot free again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .fleet import DEPLOYMENTS, Fleet, Gateway, Mock, start_gateway


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("gateway"), request.param, MAX_ATTEMPTS=3) as gateway:
        yield gateway


@pytest.fixture
def fleet(gateway: Gateway) -> Iterator[Fleet]:
    with Fleet(gateway) as fleet:
        yield fleet


def test_sync_backend_result_is_in_the_task(fleet: Fleet) -> None:
    (backend,) = fleet.add(Mock())
    task_id = fleet.submit(payload={"prompt": "hello"})
    done = fleet.wait_terminal()[task_id]
    assert done["status"] == "COMPLETED", done
    assert done["result"] == {"echo": {"prompt": "hello"}, "server": backend.name, "taskId": task_id}
    assert (done["serverId"], done["attempts"], done["progress"]) == (backend.server_id, 1, 100)
    assert done["startedAt"] <= done["completedAt"]

    finished = fleet.submit_and_wait(payload={"prompt": "inline"})
    assert finished["status"] == "COMPLETED", finished
    assert finished["result"]["echo"] == {"prompt": "inline"}
    assert finished["attempts"] == 1
    fleet.assert_settled()


def test_async_backend_reports_progress_then_completes(fleet: Fleet) -> None:
    (backend,) = fleet.add(Mock(mode="async", delay_ms=1200, progress_steps=3))
    task_id = fleet.submit()
    seen: list[tuple[str, int]] = []

    def read() -> str:
        task = fleet.task(task_id)
        seen.append((task["status"], task["progress"]))
        return str(task["status"])

    fleet.eventually(read, lambda status: status == "COMPLETED", timeout=10, what="async task COMPLETED")
    assert any(status == "PROCESSING" and 0 < progress < 100 for status, progress in seen), seen
    done = fleet.task(task_id)
    assert done["result"]["server"] == backend.name
    assert done["progress"] == 100
    fleet.assert_settled()


def test_failed_attempts_fail_over_to_a_healthy_server(fleet: Fleet) -> None:
    failing, healthy = fleet.add(Mock("a-fail", fail_rate=1), Mock("b-ok"))
    task_ids = [fleet.submit() for _ in range(6)]
    done = fleet.wait_terminal()
    for task_id in task_ids:
        task = done[task_id]
        assert (task["status"], task["serverId"]) == ("COMPLETED", healthy.server_id), task
        # the failing server sorts first, so it is tried first; a retry avoids it
        assert task["attempts"] == 1 + failing.received(task_id) <= 2, task
    assert any(done[t]["attempts"] > 1 for t in task_ids), [done[t]["attempts"] for t in task_ids]
    fleet.assert_settled()


def test_failed_after_max_attempts_then_retry_completes(fleet: Fleet) -> None:
    (backend,) = fleet.add(Mock(fail_rate=1, fail_status=500))
    task_id = fleet.submit()
    failed = fleet.wait_terminal()[task_id]
    assert failed["status"] == "FAILED", failed
    assert failed["attempts"] == 3
    assert "500" in failed["error"] and "attempt 3 of 3" in failed["error"], failed["error"]
    assert backend.received(task_id) == 3

    backend.control(failRate=0)
    fleet.retry(task_id)
    done = fleet.wait_terminal()[task_id]
    assert done["status"] == "COMPLETED", done
    assert (done["attempts"], done["error"]) == (4, None)
    fleet.assert_settled()


def test_a_4xx_answer_fails_the_task_after_one_call(fleet: Fleet) -> None:
    (backend,) = fleet.add(Mock(fail_rate=1, fail_status=400))
    task_id = fleet.submit()
    failed = fleet.wait_terminal()[task_id]
    assert failed["status"] == "FAILED", failed
    assert failed["attempts"] == 1
    assert "400" in failed["error"] and "Injected failure" in failed["error"], failed["error"]
    # No retry follows: FAILED is final (only a user's retry leaves it) and one attempt was
    # made, so the one call the backend got is all there will be.
    assert backend.received(task_id) == 1
    fleet.assert_settled()


def test_a_busy_answer_is_not_a_failed_attempt(fleet: Fleet) -> None:
    busy, healthy = fleet.add(Mock("a-busy", busy_rate=1), Mock("b-ok"))
    task_id = fleet.submit()
    done = fleet.wait_terminal()[task_id]
    assert (done["status"], done["serverId"], done["attempts"]) == ("COMPLETED", healthy.server_id, 1), done
    assert busy.received(task_id) == 1  # tried first (lower id), answered 503
    fleet.assert_settled(busy=[busy])


def test_a_task_waits_for_a_capable_server(fleet: Fleet) -> None:
    task_id = fleet.submit()
    fleet.dispatcher_caught_up()
    task = fleet.task(task_id)
    assert (task["status"], task["attempts"], task["serverId"]) == ("PENDING", 0, None), task
    (backend,) = fleet.add(Mock())
    done = fleet.wait_terminal(timeout=5)[task_id]
    assert (done["status"], done["serverId"]) == ("COMPLETED", backend.server_id), done
    fleet.assert_settled()


def test_backlog_runs_highest_priority_first(fleet: Fleet) -> None:
    # The blocker runs long enough that all four are queued behind it, even on a loaded machine.
    (backend,) = fleet.add(Mock(delay_ms=1500), max_concurrent=1)
    blocker = fleet.submit(priority=0)
    fleet.wait_status(blocker, "PROCESSING")
    queued = {priority: fleet.submit(priority=priority) for priority in (1, 9, 5, 3)}
    done = fleet.wait_terminal(timeout=10)
    assert {t["status"] for t in done.values()} == {"COMPLETED"}
    call_order = list(backend.stats()["byTask"])
    assert call_order == [blocker, queued[9], queued[5], queued[3], queued[1]]
    by_start = sorted(queued, key=lambda priority: done[queued[priority]]["startedAt"])
    assert by_start == [9, 5, 3, 1]
    fleet.assert_settled()


def test_a_server_is_never_sent_more_than_max_concurrent(fleet: Fleet) -> None:
    backends = fleet.add(Mock("a", delay_ms=100), Mock("b", delay_ms=100), max_concurrent=2)
    # Each task is some twenty AWS calls, and dev --aws makes them one at a time: 16 tasks
    # there still queue four deep behind the four slots.
    for _ in range(40 if fleet.gateway.deployment == "serve" else 16):
        fleet.submit()
    done = fleet.wait_terminal(timeout=20)
    assert {t["status"] for t in done.values()} == {"COMPLETED"}
    for backend in backends:
        stats = backend.stats()
        assert 0 < stats["maxConcurrency"] <= 2, (backend.server_id, stats["maxConcurrency"])
    fleet.assert_settled()


def test_cancel_frees_the_slot_at_once_and_tells_the_backend(fleet: Fleet) -> None:
    (backend,) = fleet.add(Mock(mode="async", delay_ms=20_000), max_concurrent=1, cancel=True)
    first = fleet.submit()
    fleet.wait_status(first, "PROCESSING")
    # Cancelled once the backend has it: a cancel sent while the predict call is still in
    # flight can reach the backend first and find nothing to stop, a race this test is not about.
    backend.wait_received(first)
    fleet.cancel(first)
    assert fleet.task(first)["status"] == "CANCELLED"
    assert fleet.server(backend.server_id)["activeTasks"] == 0

    # the freed slot is usable at once, long before the cancelled work would have ended
    second = fleet.submit()
    fleet.wait_status(second, "PROCESSING", timeout=2)
    fleet.eventually(
        lambda: backend.stats()["cancelled"],
        lambda cancelled: first in cancelled,
        timeout=5,
        what="the backend told of the cancel",
    )
    backend.wait_received(second)
    fleet.cancel(second)
    fleet.eventually(
        lambda: backend.stats(),
        lambda stats: second in stats["cancelled"] and stats["current"] == 0,
        timeout=5,
        what="the backend stopped both",
    )
    fleet.assert_settled()


def test_hundreds_of_slow_synchronous_calls_leave_the_api_answering(fleet: Fleet) -> None:
    # GIVEN two backends that hold every predict call for 8 s (longer than submitting takes on
    # a loaded machine), with room for all of them
    fleet.add(Mock("slow-a", delay_ms=8000), Mock("slow-b", delay_ms=8000), max_concurrent=100)
    # WHEN 200 tasks are in flight on them at once. On dev --aws: 24 submitted, and any number
    # in flight. There a dispatcher invocation makes its batch's predict calls one after
    # another (docs/DEPLOY.md, Known issues), so how many run at once depends on how SQS
    # batched the messages; and every AWS call is answered by moto, one at a time.
    on_one_machine = fleet.gateway.deployment == "serve"
    submitted = 200 if on_one_machine else 24
    for _ in range(submitted):
        fleet.submit()
    fleet.eventually(
        lambda: sum(fleet.server(b.server_id)["activeTasks"] for b in fleet.backends),
        lambda active: active == submitted if on_one_machine else active > 0,
        timeout=6,
        what=f"{submitted if on_one_machine else 'some'} tasks in flight",
    )
    # THEN the API still answers at once: reads, writes and health (on dev --aws in the time
    # its few AWS calls take there)
    for _ in range(10):
        started = time.perf_counter()
        fleet.api.get("/health").ok()
        fleet.task(fleet.task_ids[0])
        fleet.api.get("/api/servers", token=fleet.api.admin).ok()
        assert time.perf_counter() - started < 0.5 * fleet.gateway.patience
    # AND every task completes once its call returns
    done = fleet.wait_terminal(timeout=30)
    assert {t["status"] for t in done.values()} == {"COMPLETED"}
    fleet.assert_settled()

"""Failover that learns, through the dispatch service on a fake clock: a retry goes to a server
that has not failed the task, failures in a row eject a server, an ejected server gets nothing,
and it comes back with a slow start. The store is SQLite in a temporary file; no HTTP is made
(the backend's answers are given to `settle` as outcomes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from msgspec.structs import replace

from core.config import Config, OutlierPolicy
from core.domain.models import Endpoints, Server, Task, TaskStatus
from core.domain.protocol import Kind, Outcome
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.services import dispatch, servers, task_view
from core.services.context import Context
from core.services.dispatch import Assignment, Attempt

NOW = 1_700_000_000_000
POLICY = OutlierPolicy(
    consecutive_failures=3, base_ejection_ms=10_000, max_ejection_ms=60_000, slow_start_ms=10_000
)
CONNECTION_REFUSED = Outcome(Kind.RETRY, error="connection refused")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(tmp_path: Path, clock: Clock) -> Iterator[Context]:
    store = SqliteStore(str(tmp_path / "db"))
    config = Config.from_env({}, jwt_secret="s" * 64, outlier=POLICY, retry_base_ms=100, fleet_cache_ms=0)
    yield Context(store=store, queue=CallbackQueue(), config=config, clock=clock)
    store.close()


def add_server(ctx: Context, server_id: str, max_concurrent: int = 10) -> None:
    ctx.store.put_server(
        Server(
            id=server_id,
            name=server_id,
            endpoints=Endpoints(predict=f"http://{server_id}.test/p", health=f"http://{server_id}.test/h"),
            capabilities=["gpu"],
            max_concurrent=max_concurrent,
            registered_at=NOW - 1,
        )
    )
    ctx.fleet.invalidate()


def add_task(ctx: Context, task_id: str, attempt_limit: int = 3) -> Task:
    task = Task(
        id=task_id,
        owner="alice",
        type="t",
        priority=5,
        payload={},
        capabilities=["gpu"],
        attempt_limit=attempt_limit,
        created_at=NOW,
        updated_at=NOW,
        queued_at=NOW,
    )
    ctx.store.put_task(task)
    return task


def start(ctx: Context, task_id: str) -> Assignment:
    decision = dispatch.assign(ctx, task_id)
    assert isinstance(decision, Assignment), decision
    return decision


def fail(ctx: Context, clock: Clock, assignment: Assignment) -> Task:
    after = dispatch.settle(ctx, assignment, CONNECTION_REFUSED, Attempt())
    assert after is not None
    clock.now = max(clock.now, after.not_before)  # the backoff passes
    return after


def test_each_retry_goes_to_a_server_that_has_not_failed_the_task(ctx: Context, clock: Clock) -> None:
    # GIVEN three capable servers and a task that fails wherever it goes, with no ejection yet
    for name in ("a", "b", "c"):
        add_server(ctx, name)
    add_task(ctx, "t1")

    # WHEN it is dispatched three times
    tried = []
    for _ in range(3):
        assignment = start(ctx, "t1")
        tried.append(assignment.server.id)
        last = fail(ctx, clock, assignment)

    # THEN every attempt was on another server, and the error names the last one
    assert sorted(tried) == ["a", "b", "c"]
    assert last.status is TaskStatus.FAILED
    assert f"server {tried[-1]}" in str(last.error)


def test_failures_in_a_row_eject_a_server_and_selection_skips_it(ctx: Context, clock: Clock) -> None:
    # GIVEN one dead server "dead" that least-connections picks first, and a healthy one
    add_server(ctx, "dead")
    add_server(ctx, "live")
    ctx.store.put_setting(dispatch.ALGORITHM_SETTING, "round-robin")
    failed_on_dead = 0
    n = 0
    while failed_on_dead < POLICY.consecutive_failures:
        n += 1
        add_task(ctx, f"t{n}", attempt_limit=1)
        assignment = start(ctx, f"t{n}")
        if assignment.server.id == "dead":
            fail(ctx, clock, assignment)
            failed_on_dead += 1
        else:
            dispatch.settle(ctx, assignment, Outcome(Kind.COMPLETED, result={}), Attempt())

    # THEN it is ejected for the base time, its run starts afresh, and nothing goes there
    dead = ctx.store.get_server("dead")
    assert dead is not None
    assert (dead.ejections, dead.ejected_until, dead.outlier_failures) == (1, clock.now + 10_000, 0)
    for i in range(5):
        add_task(ctx, f"after{i}")
        assert start(ctx, f"after{i}").server.id == "live"

    # WHEN the ejection ends, THEN it gets one slot of ten first, then more as the window passes
    clock.now = dead.ejected_until
    assert ctx.fleet.slot_limit(next(s for s in ctx.fleet.servers() if s.id == "dead")) == 1
    clock.now += 5_000
    assert ctx.fleet.slot_limit(next(s for s in ctx.fleet.servers() if s.id == "dead")) == 5


def test_a_finished_attempt_ends_the_run_of_failures(ctx: Context, clock: Clock) -> None:
    # GIVEN a lone server that fails twice, then finishes one, then fails twice again
    add_server(ctx, "a")
    outcomes = [CONNECTION_REFUSED, CONNECTION_REFUSED, Outcome(Kind.FAILED, error="bad input")]
    outcomes += [CONNECTION_REFUSED, CONNECTION_REFUSED]
    for i, outcome in enumerate(outcomes):
        add_task(ctx, f"t{i}", attempt_limit=1)
        dispatch.settle(ctx, start(ctx, f"t{i}"), outcome, Attempt())

    # THEN it is not ejected: never three failures in a row
    server = ctx.store.get_server("a")
    assert server is not None and (server.outlier_failures, server.ejected_until) == (2, None)


def test_busy_answers_are_not_failures(ctx: Context, clock: Clock) -> None:
    add_server(ctx, "a")
    for i in range(4):
        add_task(ctx, f"t{i}")
        dispatch.settle(ctx, start(ctx, f"t{i}"), Outcome(Kind.BUSY, error="busy"), Attempt())
    server = ctx.store.get_server("a")
    assert server is not None and (server.outlier_failures, server.ejected_until) == (0, None)


def test_the_pending_task_explains_an_ejection_then_dispatching(ctx: Context, clock: Clock) -> None:
    # GIVEN the only capable server ejected after three failures
    add_server(ctx, "a")
    for i in range(3):
        add_task(ctx, f"t{i}", attempt_limit=1)
        fail(ctx, clock, start(ctx, f"t{i}"))
    waiting = add_task(ctx, "waiting")

    # WHEN its GET body is made, THEN it says the server is ejected, and for how long
    queue = task_view.describe(ctx, waiting)["queue"]
    assert queue["reason"] == "no_server_online"
    assert "a ejected after failed attempts for 10000 ms more" in queue["details"]
    assert isinstance(dispatch.assign(ctx, "waiting"), dispatch.Waiting)

    # WHEN the ejection ends, THEN it is about to start, and it does
    clock.now += 10_000
    assert task_view.describe(ctx, waiting)["queue"] == {
        "reason": "dispatching",
        "details": "a slot is free on a: the task is about to start",
        "position": 1,
        "estimatedStartAt": clock.now,
    }
    assert start(ctx, "waiting").server.id == "a"


def test_a_running_or_finished_task_has_capabilities_and_no_queue(ctx: Context, clock: Clock) -> None:
    add_server(ctx, "a")
    add_task(ctx, "t")
    running = start(ctx, "t").task
    body = task_view.describe(ctx, running)
    assert body["capabilities"] == ["gpu"] and "queue" not in body


def test_a_passed_active_check_ends_an_ejection_and_wakes_dispatch(ctx: Context, clock: Clock) -> None:
    # GIVEN a server ejected after three failures, and a dispatcher listening for capacity
    add_server(ctx, "a")
    for i in range(3):
        add_task(ctx, f"t{i}", attempt_limit=1)
        fail(ctx, clock, start(ctx, f"t{i}"))
    woken: list[bool] = []
    assert isinstance(ctx.queue, CallbackQueue)
    ctx.queue.on_capacity = lambda: woken.append(True)
    clock.now += 1_000

    # WHEN an active check fails, THEN it stays ejected and nothing is woken
    servers.record_check(ctx, "a", False)
    failed_check = ctx.store.get_server("a")
    assert failed_check is not None and failed_check.ejected_until == NOW + 10_000 and woken == []

    # WHEN an active check passes, THEN the ejection ends now, into a slow start, and dispatch is woken
    servers.record_check(ctx, "a", True)
    passed = ctx.store.get_server("a")
    assert passed is not None and (passed.ejected_until, passed.slow_start_from) == (clock.now, clock.now)
    assert woken == [True]
    # AND once health has it online again (the failed check made it degraded), it takes tasks
    servers.record_check(ctx, "a", True)
    add_task(ctx, "next")
    assert start(ctx, "next").server.id == "a"


def test_the_position_follows_the_scheduler_s_owner_queues(ctx: Context, clock: Clock) -> None:
    # GIVEN a full server, and waiting: one task of a higher priority, three of alice's and one
    # of bob's at priority 5 (alice's queued first)
    add_server(ctx, "a", max_concurrent=1)
    start(ctx, add_task(ctx, "running").id)
    alice = add_task(ctx, "alice-0")  # queued at NOW, after "running"
    for task in (
        replace(alice, id="urgent", priority=9, queued_at=NOW + 1),
        replace(alice, id="alice-1", queued_at=NOW + 2),
        replace(alice, id="alice-2", queued_at=NOW + 3),
        replace(alice, id="bob-0", owner="bob", queued_at=NOW + 4),
    ):
        ctx.store.put_task(task)

    # WHEN their GET bodies are made, THEN each place is the scheduler's: higher priorities
    # first, then its own owner queue's FIFO, then fair share with the other owners
    def queue_of(task_id: str) -> dict[str, object]:
        task = ctx.store.get_task(task_id)
        assert task is not None
        return dict(task_view.describe(ctx, task)["queue"])

    assert queue_of("urgent")["position"] == 1
    assert queue_of("alice-0")["position"] == 1 + 1 + 1  # urgent, and bob's head may go first
    assert queue_of("alice-2")["position"] == 1 + 2 + 1 + 1  # urgent, two of hers, bob's one
    assert queue_of("bob-0")["position"] == 1 + 1 + 1  # urgent, and one of alice's
    assert "estimatedStartAt" not in queue_of("bob-0")  # full, and no pace measured yet

"""Statistics on both adapters (SQLite; DynamoDB under moto): a known day of tasks driven
through the real services with a fake clock, counted by the one-machine listener, then every
field of the three stats views checked exactly.

GIVEN servers gpu-a (capability "a") and gpu-b ("b") and this day, 2024-01-06 (UTC):

| time      | task | what happens                                             |
|-----------|------|----------------------------------------------------------|
| 07:00:0x  | t1-5 | created (t1, t2, t5 need "a"; t3, t4 need "b")            |
| 07:10     | t1   | gpu-a; progress 50 at 07:10:10; COMPLETED 07:10:30 (30 s)  |
| 07:20     | t2   | gpu-a; COMPLETED 08:05 (45 min, counted in hour 08)       |
| 07:30     | t3   | gpu-b; FAILED 07:31                                       |
| 07:40     | t4   | gpu-b; attempt fails 07:41, requeued (not a retry)        |
| 07:50     | t4   | gpu-b again; TIMEOUT 09:00 (last attempt)                 |
| 08:00     | t5   | cancelled while PENDING; retried 08:30                    |
| 08:40     | t5   | gpu-a; COMPLETED 08:40:10 (10 s)                          |
| 10:00     | t3   | retried; gpu-b 10:01; cancelled while PROCESSING 10:02    |
| 11:00     | t7   | created needing "z" (no server); queue TIMEOUT 12:00      |
| 13:00     | t8   | created needing "z": still PENDING at the end             |
| 14:00-    |      | health: gpu-a 3 of 4 healthy, gpu-b 4 of 5                |
| 23:59:59  | t6   | created ("b"); gpu-b 00:00:01 next day; COMPLETED 00:00:31 |
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from core.config import Config
from core.domain.auth import ADMIN, SERVICE, USER, Principal
from core.domain.models import Task, TaskStatus
from core.domain.schemas import CreateTask, EndpointsBody, Heartbeat, RegisterServer, SetAlgorithm, UpdateTask
from core.errors import ForbiddenError, NotFoundError, ValidationError
from core.local.events import LocalEvents
from core.local.queue import CallbackQueue
from core.services import dispatch, servers, stats, tasks
from core.services.context import Context
from core.services.dispatch import Assignment
from tests.contract.conftest import StoreFactory, moto_dynamodb, open_store  # noqa: F401 - fixtures
from tests.support.waiting import eventually_async

DAY, NEXT_DAY = "2024-01-06", "2024-01-07"
ADMIN_P = Principal("root", frozenset({ADMIN}))
ALICE = Principal("alice", frozenset({USER}))


def at(time: str, day: str = DAY) -> int:
    return int(datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=UTC).timestamp() * 1000)


class Clock:
    def __init__(self) -> None:
        self.now = at("00:00:00")

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def ctx(open_store: StoreFactory) -> Iterator[Context]:  # noqa: F811 - the imported fixture
    clock = Clock()
    events = LocalEvents()
    context = Context(
        store=open_store(),
        queue=CallbackQueue(),
        config=Config(jwt_secret="s" * 32, max_attempts=2),
        clock=clock,
        events=events,
    )
    events.listeners.append(stats.Recorder(context))
    yield context


def clock(ctx: Context) -> Clock:
    assert isinstance(ctx.clock, Clock)
    return ctx.clock


def when(ctx: Context, time: str, day: str = DAY) -> None:
    clock(ctx).now = at(time, day)


def register(ctx: Context, server_id: str, capability: str, priority: int, max_concurrent: int) -> None:
    base = f"http://127.0.0.1:9/{server_id}"
    body = RegisterServer(
        id=server_id,
        name=server_id,
        endpoints=EndpointsBody(predict=f"{base}/predict", health=f"{base}/health"),
        capabilities=[capability],
        priority=priority,
        max_concurrent=max_concurrent,
    )
    servers.register_server(ctx, ADMIN_P, body)


def create(ctx: Context, capability: str) -> str:
    body = CreateTask(type="t", priority=1, payload={}, capabilities=[capability])
    return tasks.create_task(ctx, ALICE, body).id


def start(ctx: Context, task_id: str, server_id: str) -> Task:
    decision = dispatch.assign(ctx, task_id)
    assert isinstance(decision, Assignment), decision
    assert decision.server.id == server_id
    return decision.task


def heartbeat(ctx: Context, server_id: str, healthy: bool) -> None:
    registered = ctx.store.get_server(server_id)
    assert registered is not None
    # The server's own token, bound to its registration (as registration returns it).
    service = Principal(
        f"server:{server_id}", frozenset({SERVICE}), server_id=server_id, token_id=registered.token_id
    )
    servers.heartbeat(ctx, service, server_id, Heartbeat(status="healthy" if healthy else "unhealthy"))


def run_the_day(ctx: Context) -> dict[str, str]:
    when(ctx, "06:00:00")
    register(ctx, "gpu-a", "a", priority=2, max_concurrent=4)
    register(ctx, "gpu-b", "b", priority=1, max_concurrent=2)
    ids: dict[str, str] = {}
    for i, capability in enumerate("aabba", start=1):
        when(ctx, f"07:00:0{i}")
        ids[f"t{i}"] = create(ctx, capability)

    when(ctx, "07:10:00")
    t1 = start(ctx, ids["t1"], "gpu-a")
    when(ctx, "07:10:10")
    callback = Principal("server:gpu-a", frozenset({SERVICE}), server_id="gpu-a", task_id=t1.id, attempt=1)
    tasks.report(ctx, callback, t1.id, UpdateTask(progress=50))
    when(ctx, "07:10:30")
    tasks.report(ctx, callback, t1.id, UpdateTask(status="COMPLETED", result={"ok": True}))

    when(ctx, "07:20:00")
    t2 = start(ctx, ids["t2"], "gpu-a")
    when(ctx, "07:30:00")
    t3 = start(ctx, ids["t3"], "gpu-b")
    when(ctx, "07:31:00")
    tasks.finish(ctx, t3, TaskStatus.FAILED, error="bad input")
    when(ctx, "07:40:00")
    t4 = start(ctx, ids["t4"], "gpu-b")
    when(ctx, "07:41:00")
    assert tasks.requeue(ctx, t4, "connection refused").status is TaskStatus.PENDING
    when(ctx, "07:50:00")
    t4 = start(ctx, ids["t4"], "gpu-b")

    when(ctx, "08:00:00")
    tasks.cancel_task(ctx, ALICE, ids["t5"])
    when(ctx, "08:05:00")
    tasks.finish(ctx, t2, TaskStatus.COMPLETED, result={})
    when(ctx, "08:30:00")
    tasks.retry_task(ctx, ALICE, ids["t5"])
    when(ctx, "08:40:00")
    t5 = start(ctx, ids["t5"], "gpu-a")
    when(ctx, "08:40:10")
    tasks.finish(ctx, t5, TaskStatus.COMPLETED, result={})

    when(ctx, "09:00:00")
    assert tasks.time_out(ctx, t4, "deadline passed").status is TaskStatus.TIMEOUT

    when(ctx, "10:00:00")
    tasks.retry_task(ctx, ALICE, ids["t3"])
    when(ctx, "10:01:00")
    start(ctx, ids["t3"], "gpu-b")
    when(ctx, "10:02:00")
    tasks.cancel_task(ctx, ALICE, ids["t3"])

    when(ctx, "11:00:00")
    ids["t7"] = create(ctx, "z")
    when(ctx, "12:00:00")
    t7 = ctx.store.get_task(ids["t7"])
    assert t7 is not None
    tasks.expire_pending(ctx, t7, "no server has capability z")
    when(ctx, "13:00:00")
    ids["t8"] = create(ctx, "z")

    # gpu-a: healthy, healthy, unhealthy, healthy; gpu-b: healthy, unhealthy, then three healthy.
    for minute, (server_id, healthy, pushed) in enumerate(
        [
            ("gpu-a", True, True),
            ("gpu-a", True, False),
            ("gpu-a", False, False),
            ("gpu-a", True, True),
            ("gpu-b", True, False),
            ("gpu-b", False, True),
            ("gpu-b", True, False),
            ("gpu-b", True, False),
            ("gpu-b", True, True),
        ]
    ):
        when(ctx, f"14:{minute:02d}:00")
        if pushed:
            heartbeat(ctx, server_id, healthy)
        else:
            servers.record_check(ctx, server_id, healthy)

    when(ctx, "23:59:59")
    ids["t6"] = create(ctx, "b")
    when(ctx, "00:00:01", NEXT_DAY)
    t6 = start(ctx, ids["t6"], "gpu-b")
    when(ctx, "00:00:31", NEXT_DAY)
    tasks.finish(ctx, t6, TaskStatus.COMPLETED, result={})
    heartbeat(ctx, "gpu-b", True)

    final = {name: ctx.store.get_task(task_id) for name, task_id in ids.items()}
    assert {name: t.status.value for name, t in final.items() if t} == {
        "t1": "COMPLETED",
        "t2": "COMPLETED",
        "t3": "CANCELLED",
        "t4": "TIMEOUT",
        "t5": "COMPLETED",
        "t6": "COMPLETED",
        "t7": "TIMEOUT",
        "t8": "PENDING",
    }
    return ids


AVERAGE_A = round((30_000 + 45 * 60_000 + 10_000) / 3)


def hourly(**by_hour: dict[str, int]) -> list[dict[str, Any]]:
    empty = {"created": 0, "completed": 0, "failed": 0, "averageTime": 0}
    return [{"hour": h, **empty, **by_hour.get(f"h{h:02d}", {})} for h in range(24)]


DAY_HOURS = hourly(
    h07={"created": 5, "completed": 1, "failed": 1, "averageTime": 30_000},
    h08={"completed": 2, "averageTime": round((45 * 60_000 + 10_000) / 2)},
    h09={"failed": 1},
    h11={"created": 1},
    h12={"failed": 1},
    h13={"created": 1},
    h23={"created": 1},
)


def test_task_stats_for_the_day(ctx: Context) -> None:
    run_the_day(ctx)
    report = stats.task_stats(ctx, ALICE, DAY)
    assert report == {
        "totalTasks": 8,
        "pendingTasks": 1,
        "successfulTasks": 3,
        "failedTasks": 3,
        "retriedTasks": 2,
        "averageProcessingTime": AVERAGE_A,
        "serverCount": 2,
        "topServers": [
            {"serverId": "gpu-a", "tasksProcessed": 3, "successRate": 1.0},
            {"serverId": "gpu-b", "tasksProcessed": 2, "successRate": 0},
        ],
        "hourlyTrend": [{"hour": h["hour"], "tasks": h["created"]} for h in DAY_HOURS],
    }
    assert stats.task_stats(ctx, ADMIN_P, NEXT_DAY) | {"hourlyTrend": None} == {
        "totalTasks": 0,
        "pendingTasks": 1,
        "successfulTasks": 1,
        "failedTasks": 0,
        "retriedTasks": 0,
        "averageProcessingTime": 30_000,
        "serverCount": 2,
        "topServers": [{"serverId": "gpu-b", "tasksProcessed": 1, "successRate": 1.0}],
        "hourlyTrend": None,
    }
    # no ?date=: today by the clock (the next day)
    assert stats.task_stats(ctx, ALICE, None)["successfulTasks"] == 1


def test_hourly_report(ctx: Context) -> None:
    run_the_day(ctx)
    assert stats.hourly_report(ctx, ALICE, DAY) == {"date": DAY, "hours": DAY_HOURS}
    assert stats.hourly_report(ctx, ALICE, NEXT_DAY) == {
        "date": NEXT_DAY,
        "hours": hourly(h00={"completed": 1, "averageTime": 30_000}),
    }
    assert stats.hourly_report(ctx, ALICE, "2024-01-05") == {"date": "2024-01-05", "hours": hourly()}


def test_server_stats_with_uptime_from_heartbeats_and_checks(ctx: Context) -> None:
    run_the_day(ctx)
    assert stats.server_stats(ctx, ALICE, "gpu-a", DAY) == {
        "serverId": "gpu-a",
        "tasksProcessed": 3,
        "successCount": 3,
        "failureCount": 0,
        "successRate": 1.0,
        "averageProcessingTime": AVERAGE_A,
        "uptime": 0.75,
    }
    assert stats.server_stats(ctx, ALICE, "gpu-b", DAY) == {
        "serverId": "gpu-b",
        "tasksProcessed": 2,
        "successCount": 0,
        "failureCount": 2,
        "successRate": 0,
        "averageProcessingTime": 0,
        "uptime": 0.8,
    }
    assert stats.server_stats(ctx, ALICE, "gpu-b", NEXT_DAY) == {
        "serverId": "gpu-b",
        "tasksProcessed": 1,
        "successCount": 1,
        "failureCount": 0,
        "successRate": 1.0,
        "averageProcessingTime": 30_000,
        "uptime": 1.0,
    }
    # registered, nothing that day: zeros, and no observation is no uptime
    assert stats.server_stats(ctx, ALICE, "gpu-a", NEXT_DAY) == {
        "serverId": "gpu-a",
        "tasksProcessed": 0,
        "successCount": 0,
        "failureCount": 0,
        "successRate": 0,
        "averageProcessingTime": 0,
        "uptime": 0,
    }


def test_an_unregistered_server_keeps_its_history_and_leaves_the_rankings(ctx: Context) -> None:
    run_the_day(ctx)
    servers.unregister_server(ctx, ADMIN_P, "gpu-b")
    assert stats.server_stats(ctx, ALICE, "gpu-b", DAY)["tasksProcessed"] == 2
    with pytest.raises(NotFoundError, match=r"^Server not found: gpu-b$"):
        stats.server_stats(ctx, ALICE, "gpu-b", "2024-01-05")
    with pytest.raises(NotFoundError, match=r"^Server not found: ghost$"):
        stats.server_stats(ctx, ALICE, "ghost", DAY)
    report = stats.task_stats(ctx, ALICE, DAY)
    assert (report["serverCount"], [s["serverId"] for s in report["topServers"]]) == (1, ["gpu-a"])


def test_who_may_read_and_a_malformed_date(ctx: Context) -> None:
    backend = Principal("server:gpu-a", frozenset({SERVICE}), server_id="gpu-a")
    reads: list[Callable[[Principal], object]] = [
        lambda p: stats.task_stats(ctx, p, None),
        lambda p: stats.hourly_report(ctx, p, None),
        lambda p: stats.server_stats(ctx, p, "gpu-a", None),
        lambda p: stats.load_balancer(ctx, p),
    ]
    for read in reads:
        with pytest.raises(ForbiddenError):
            read(backend)
    with pytest.raises(ValidationError, match=r"^Invalid query parameter date: "):
        stats.hourly_report(ctx, ALICE, "2024-02-30")


def test_load_balancer_status_and_algorithm(ctx: Context) -> None:
    when(ctx, "06:00:00")
    register(ctx, "gpu-a", "a", priority=2, max_concurrent=4)
    register(ctx, "gpu-b", "b", priority=1, max_concurrent=2)
    assert stats.load_balancer(ctx, ALICE)["algorithm"] == "least-connections"
    for capability in "aab":
        start(ctx, create(ctx, capability), f"gpu-{capability}")
    assert stats.load_balancer(ctx, ALICE) == {
        "algorithm": "least-connections",
        "serverDistribution": {
            "gpu-a": {"load": 0.5, "activeTasks": 2, "weight": 2},
            "gpu-b": {"load": 0.5, "activeTasks": 1, "weight": 1},
        },
        "totalActiveTasks": 3,
        "averageLoad": 0.5,
    }

    assert stats.set_algorithm(ctx, ADMIN_P, SetAlgorithm(algorithm="p2c")) == "p2c"
    assert dispatch.algorithm(ctx) == "p2c"
    assert stats.load_balancer(ctx, ALICE)["algorithm"] == "p2c"
    with pytest.raises(ForbiddenError, match="Admin role required"):
        stats.set_algorithm(ctx, ALICE, SetAlgorithm(algorithm="random"))
    with pytest.raises(
        ValidationError, match=r"^Invalid field algorithm: 'fastest' is not one of round-robin, "
    ):
        stats.set_algorithm(ctx, ADMIN_P, SetAlgorithm(algorithm="fastest"))
    assert dispatch.algorithm(ctx) == "p2c"


def test_no_servers_no_load(ctx: Context) -> None:
    assert stats.load_balancer(ctx, ALICE) == {
        "algorithm": "least-connections",
        "serverDistribution": {},
        "totalActiveTasks": 0,
        "averageLoad": 0,
    }


def test_a_task_costs_one_counter_write_created_none_dispatched_two_finished(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    when(ctx, "06:00:00")
    register(ctx, "gpu-a", "a", priority=1, max_concurrent=1)
    writes: list[str] = []
    add = ctx.store.add_counters

    def counted(key: str, increments: Mapping[str, int], *, expires_at: int) -> None:
        writes.append(key)
        add(key, increments, expires_at=expires_at)

    monkeypatch.setattr(ctx.store, "add_counters", counted)
    when(ctx, "07:00:00")
    task_id = create(ctx, "a")
    assert writes == ["hour:2024-01-06T07"]
    running = start(ctx, task_id, "gpu-a")
    assert len(writes) == 1
    tasks.finish(ctx, running, TaskStatus.COMPLETED, result={})
    assert writes[1:] == ["hour:2024-01-06T07", "server:2024-01-06:gpu-a"]


def test_held_back_counts_are_merged_into_one_write_per_key_and_never_read_late(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One machine holds counts back (Recorder batch_s) inside its event loop: many tasks cost
    one write per key, written by the timer, and a stats read in between sees them all."""
    when(ctx, "06:00:00")
    register(ctx, "gpu-a", "a", priority=1, max_concurrent=10)
    (recorder,) = [found for found in ctx.events.listeners if isinstance(found, stats.Recorder)]
    recorder.batch_s = 0.05
    writes: list[str] = []
    add = ctx.store.add_counters

    def counted(key: str, increments: Mapping[str, int], *, expires_at: int) -> None:
        writes.append(key)
        add(key, increments, expires_at=expires_at)

    monkeypatch.setattr(ctx.store, "add_counters", counted)
    when(ctx, "07:00:00")

    async def scenario() -> None:
        for _ in range(3):
            running = start(ctx, create(ctx, "a"), "gpu-a")
            tasks.finish(ctx, running, TaskStatus.COMPLETED, result={})
        assert writes == []  # held back
        report = stats.task_stats(ctx, ADMIN_P, DAY)  # a read flushes first
        assert report["successfulTasks"] == 3
        assert sorted(writes) == ["hour:2024-01-06T07", "server:2024-01-06:gpu-a"]
        create(ctx, "a")
        # The timer writes what came after the read.
        await eventually_async(lambda: writes[2:], timeout=5, what="the timer's write")
        assert writes[2:] == ["hour:2024-01-06T07"]

    asyncio.run(scenario())
    assert stats.hourly_report(ctx, ADMIN_P, DAY)["hours"][7]["created"] == 4

"""Why a PENDING task waits: each reason, its precedence, and details that name capabilities,
servers and states but never an endpoint URL."""

from __future__ import annotations

from typing import Any

import pytest

from core.config import OutlierPolicy
from core.domain import outlier
from core.domain.models import Endpoints, Server, ServerStatus, Task
from core.domain.queue_reason import (
    QueueCount,
    Reason,
    backlog_rows,
    estimated_start,
    explain,
    position,
    start_estimate,
)

NOW = 1_700_000_000_000
POLICY = OutlierPolicy()


def server(server_id: str, *capabilities: str, **fields: Any) -> Server:
    return Server(
        id=server_id,
        name=server_id,
        endpoints=Endpoints(
            predict=f"http://{server_id}.internal:9/predict", health=f"http://{server_id}.internal:9/h"
        ),
        capabilities=list(capabilities),
        registered_at=NOW - 1,
        **fields,
    )


def why(
    capabilities: list[str], fleet: list[Server], *, not_before: int = 0, previous: str | None = None
) -> Any:
    return explain(
        capabilities,
        fleet,
        NOW,
        slot_limit=lambda s: outlier.slot_limit(s, NOW, POLICY),
        not_before=not_before,
        previous_server=previous,
    )


def test_a_capability_nobody_has_is_named() -> None:
    got = why(["gpu", "tpu"], [server("a", "gpu"), server("b", "gpu", "cuda")])
    assert got.reason is Reason.NO_CAPABLE_SERVER
    assert "`tpu`" in got.details and "`gpu`" not in got.details


def test_capabilities_spread_over_servers_that_each_lack_one() -> None:
    got = why(["gpu", "tpu"], [server("a", "gpu"), server("b", "tpu")])
    assert got.reason is Reason.NO_CAPABLE_SERVER
    assert got.details == "no registered server has all of `gpu`, `tpu`"


def test_an_empty_fleet() -> None:
    got = why([], [])
    assert (got.reason, got.details) == (Reason.NO_CAPABLE_SERVER, "no server is registered")
    named = why(["gpu"], [])
    assert named.details == "no server is registered (the task needs `gpu`)"


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"status": ServerStatus.OFFLINE}, "a offline"),
        ({"status": ServerStatus.DEGRADED}, "a degraded"),
        (
            {"status": ServerStatus.MAINTENANCE, "maintenance_reason": "driver update"},
            "a in maintenance (driver update)",
        ),
        ({"ejected_until": NOW + 12_000}, "a ejected after failed attempts for 12000 ms more"),
    ],
)
def test_capable_servers_none_taking_tasks_each_with_its_state(fields: dict[str, Any], state: str) -> None:
    fleet = [server("a", "gpu", **fields), server("z", "cpu")]
    got = why(["gpu"], fleet, not_before=NOW + 5_000)  # no server beats the backoff
    assert got.reason is Reason.NO_SERVER_ONLINE
    assert got.details == f"one server with `gpu` is not taking tasks: {state}"


def test_backoff_when_a_capable_server_is_online() -> None:
    got = why(["gpu"], [server("a", "gpu")], not_before=NOW + 700, previous="b")
    assert got.reason is Reason.BACKOFF
    assert got.details == "waiting 700 ms before the next attempt (the last one, on server b, did not finish)"


def test_capacity_full_counts_slots_and_the_servers_not_taking_tasks() -> None:
    fleet = [
        server("a", "gpu", max_concurrent=2, active_tasks=2),
        server("b", "gpu", max_concurrent=3, active_tasks=3),
        server("c", "gpu", status=ServerStatus.OFFLINE),
    ]
    got = why(["gpu"], fleet)
    assert got.reason is Reason.CAPACITY_FULL
    assert got.details == (
        "every slot is taken on the 2 online servers with `gpu` (5 of 5 slots); 1 more capable server is not taking tasks"
    )
    assert (got.capable_online, got.slots) == (2, 5)


def test_a_slow_start_share_full_is_capacity_full() -> None:
    # One slot of ten is offered right after an ejection ends, and it is taken.
    fleet = [
        server("a", "gpu", max_concurrent=10, active_tasks=1, ejected_until=NOW - 1, slow_start_from=NOW - 1)
    ]
    got = why(["gpu"], fleet)
    assert got.reason is Reason.CAPACITY_FULL
    assert "(1 of 1 slots)" in got.details


def test_dispatching_names_the_servers_with_a_free_slot_and_counts_the_rest() -> None:
    fleet = [server(f"s{i}", max_concurrent=1) for i in range(7)] + [
        server("busy", max_concurrent=1, active_tasks=1)
    ]
    got = why([], fleet)
    assert got.reason is Reason.DISPATCHING
    assert got.details == "a slot is free on s0, s1, s2, s3, s4 and 2 more: the task is about to start"


def test_details_never_carry_an_endpoint_url() -> None:
    fleets = [
        [server("a", "gpu", status=ServerStatus.OFFLINE)],
        [server("a", "gpu", active_tasks=10)],
        [server("a", "gpu")],
        [server("a", "cpu")],
    ]
    for fleet in fleets:
        details = why(["gpu"], fleet).details
        assert "http" not in details and "internal" not in details


def test_the_backlog_by_capability_set_largest_first_with_reasons() -> None:
    fleet = [server("a", "gpu", max_concurrent=1, active_tasks=1), server("b", "cpu")]
    rows = backlog_rows(
        [(["tpu"], 312), (["gpu"], 4), (["cpu"], 1), (["x"], 0)],
        fleet,
        NOW,
        slot_limit=lambda s: s.max_concurrent,
    )
    assert [(r["capabilities"], r["count"], r["reason"]) for r in rows] == [
        (["tpu"], 312, "no_capable_server"),
        (["gpu"], 4, "capacity_full"),
        (["cpu"], 1, "dispatching"),
    ]
    assert rows[0]["details"] == "312 tasks need `tpu`: no registered server has `tpu`"
    assert rows[2]["details"] == "1 task needs `cpu`: a slot is free on b: the task is about to start"


def task(owner: str = "alice", priority: int = 5, *capabilities: str) -> Task:
    return Task(
        id="t",
        owner=owner,
        type="x",
        priority=priority,
        payload={},
        capabilities=list(capabilities),
        created_at=NOW,
        updated_at=NOW,
        queued_at=NOW,
    )


def count(owner: str, priority: int, pending: int, *capabilities: str) -> QueueCount:
    return QueueCount(frozenset(capabilities), priority, owner, pending)


def test_position_counts_higher_priorities_own_fifo_and_a_fair_share_of_other_owners() -> None:
    fleet = [server("a", "gpu"), server("c", "cpu")]
    queues = [
        count("alice", 5, 10, "gpu"),  # the task's own owner queue (3 of them ahead of it)
        count("bob", 9, 4, "gpu"),  # higher priority, same servers: all ahead
        count("bob", 5, 100, "gpu"),  # same priority, a heavy owner: fair share lets 3 + 1 ahead
        count("carol", 5, 2),  # needs nothing, so "a" can run it: both ahead (fewer than 4)
        count("dave", 9, 50, "cpu"),  # only "c" runs it, which cannot run the task: not ahead
        count("erin", 1, 70, "gpu"),  # lower priority: never ahead
    ]
    assert position(task("alice", 5, "gpu"), 3, queues, fleet) == 1 + 3 + 4 + 4 + 2


def test_position_of_the_head_of_an_empty_fleet_queue_is_one() -> None:
    assert position(task("alice", 5, "gpu"), 0, [count("alice", 5, 1, "gpu")], [server("a", "gpu")]) == 1


def test_estimated_start_follows_the_pace_of_the_slots() -> None:
    fleet = [
        server("a", max_concurrent=2, latency_ewma_ms=1_000),
        server("b", max_concurrent=2, latency_ewma_ms=3_000),
    ]
    # 4 slots, 2,000 ms a task on average: a slot frees every 500 ms; the 6th release is 3 s away.
    assert estimated_start(6, fleet, NOW, slot_limit=lambda s: s.max_concurrent) == NOW + 3_000
    # Nothing measured yet: no estimate.
    assert estimated_start(6, [server("c")], NOW, slot_limit=lambda s: s.max_concurrent) is None
    # Ejected (no slot to offer): no estimate.
    assert estimated_start(1, fleet, NOW, slot_limit=lambda s: 0) is None


def test_start_estimate_by_reason() -> None:
    def limit(s: Server) -> int:
        return s.max_concurrent

    full = [server("a", "gpu", max_concurrent=2, active_tasks=2, latency_ewma_ms=1_000)]
    waiting = task("alice", 5, "gpu")
    capacity = why(["gpu"], full)
    assert start_estimate(capacity, 4, waiting, full, NOW, slot_limit=limit) == NOW + 2_000
    free = [server("a", "gpu", max_concurrent=2, latency_ewma_ms=1_000)]
    assert start_estimate(why(["gpu"], free), 1, waiting, free, NOW, slot_limit=limit) == NOW
    backing_off = Task(
        **{**{f: getattr(waiting, f) for f in waiting.__struct_fields__}, "not_before": NOW + 300}
    )
    backoff = why(["gpu"], free, not_before=NOW + 300)
    assert start_estimate(backoff, 1, backing_off, free, NOW, slot_limit=limit) == NOW + 300  # a slot is free
    backoff_full = why(["gpu"], full, not_before=NOW + 300)
    assert start_estimate(backoff_full, 4, backing_off, full, NOW, slot_limit=limit) == NOW + 2_000
    offline = [server("a", "gpu", status=ServerStatus.OFFLINE, latency_ewma_ms=1_000)]
    assert start_estimate(why(["gpu"], offline), 1, waiting, offline, NOW, slot_limit=limit) is None
    unmeasured = [server("a", "gpu", active_tasks=10)]
    assert start_estimate(why(["gpu"], unmeasured), 1, waiting, unmeasured, NOW, slot_limit=limit) is None

"""The dashboard's overview and statistics over a range of days, on a real store: the days are
summed as one-day statistics are, a range ends on the day asked, and one request answers for
the whole page (a user's view without servers)."""

from __future__ import annotations

from datetime import date

import pytest

from core.domain.auth import SERVICE, Principal
from core.errors import ForbiddenError, ValidationError
from core.services import overview, stats, stats_range
from core.services.context import Context
from tests.unit.services.conftest import ADMIN_USER, ALICE, add_server, submit

SERVICE_PRINCIPAL = Principal(sub="server:gpu-1", roles=frozenset({SERVICE}), server_id="gpu-1")
EXPIRES = 2_000_000_000


def count(ctx: Context, day: date, hour: int, **counts: int) -> None:
    ctx.store.add_counters(stats.hour_keys(day)[hour], counts, expires_at=EXPIRES)


def test_a_range_sums_its_days_and_ranks_servers_over_them(ctx: Context) -> None:
    add_server(ctx, "gpu-1")
    add_server(ctx, "gpu-2")
    monday, tuesday = date(2024, 1, 1), date(2024, 1, 2)
    count(ctx, monday, 3, created=4, completed=3, failed=1, processing_ms=300)
    count(ctx, tuesday, 10, created=2, completed=1, timed_out=1, retried=1, processing_ms=500)
    count(ctx, tuesday, 23, cancelled=1)
    ctx.store.add_counters(stats.server_key(monday, "gpu-1"), {"completed": 3}, expires_at=EXPIRES)
    ctx.store.add_counters(
        stats.server_key(tuesday, "gpu-2"), {"completed": 1, "failed": 4}, expires_at=EXPIRES
    )

    body = stats_range.range_stats(ctx, tuesday, 2, ctx.store.list_servers())

    assert (body["start"], body["end"]) == ("2024-01-01", "2024-01-02")
    assert [d["date"] for d in body["daily"]] == ["2024-01-01", "2024-01-02"]
    assert [
        (d["created"], d["completed"], d["failed"], d["cancelled"], d["retried"]) for d in body["daily"]
    ] == [
        (4, 3, 1, 0, 0),
        (2, 1, 1, 1, 1),
    ]
    assert body["daily"][0]["averageTime"] == 100 and body["daily"][1]["averageTime"] == 500
    assert (body["totalTasks"], body["successfulTasks"], body["failedTasks"], body["retriedTasks"]) == (
        6,
        4,
        2,
        1,
    )
    assert body["averageProcessingTime"] == 200
    assert [(t["serverId"], t["tasksProcessed"]) for t in body["topServers"]] == [("gpu-2", 5), ("gpu-1", 3)]
    assert body["hourly"] is None
    # one day has its 24 hours, as /api/stats/hourly shows them
    one = stats_range.range_stats(ctx, tuesday, 1, [])
    assert len(one["hourly"]) == 24 and one["hourly"][10]["created"] == 2 and len(one["daily"]) == 1


@pytest.mark.parametrize("days", ["0", "32", "x", "-1", "1.5"])
def test_a_range_outside_one_to_31_days_is_refused(days: str) -> None:
    with pytest.raises(ValidationError, match="days"):
        stats_range.parse_days(days)


def test_the_overview_is_the_whole_page_and_a_user_gets_no_servers(ctx: Context) -> None:
    add_server(ctx, "gpu-1")
    submit(ctx, priority=3)
    submit(ctx, priority=7)

    seen = overview.overview(ctx, ADMIN_USER, days="7")
    assert [s["id"] for s in seen["servers"]] == ["gpu-1"]
    assert seen["queue"]["pending"] == 2 and seen["queue"]["pendingByPriority"][0] == {
        "priority": 7,
        "count": 1,
    }
    assert len(seen["tasks"]["tasks"]) == 2 and len(seen["stats"]["daily"]) == 7
    assert seen["loadBalancer"]["algorithm"] and seen["generatedAt"] == ctx.now()

    mine = overview.overview(ctx, ALICE, status="PENDING", limit="1")
    assert mine["servers"] is None and len(mine["tasks"]["tasks"]) == 1 and mine["tasks"]["nextCursor"]
    with pytest.raises(ForbiddenError):
        overview.overview(ctx, SERVICE_PRINCIPAL)
    with pytest.raises(ValidationError):
        overview.overview(ctx, ALICE, end="yesterday")

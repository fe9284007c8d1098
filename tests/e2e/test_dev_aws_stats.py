"""Statistics on `taskgate dev --aws`: counted from the table's stream, as in AWS.

GIVEN a `dev --aws` process (its stream mapping feeds handlers.stats_stream) and a sync backend,
WHEN tasks complete and fail, THEN /api/stats/tasks shows them within a few stream batches,
and each exactly once.
"""

from __future__ import annotations

import httpx

from tests.support.waiting import eventually

from .fleet import Backend
from .test_dev_aws import backends, finished, gateway, register, submit

__all__ = ["backends", "gateway"]  # fixtures, used by name


def test_finished_tasks_reach_the_statistics_through_the_stream(
    gateway: httpx.Client, backends: dict[str, Backend]
) -> None:
    before = gateway.get("/api/stats/tasks").json()
    ok = register(gateway, backends["sync"])
    failing = register(gateway, backends["failing"])
    done = [finished(gateway, submit(gateway, ok)["id"]) for _ in range(3)]
    failed = finished(gateway, submit(gateway, failing)["id"], timeout=20.0)
    assert [t["status"] for t in done] == ["COMPLETED"] * 3 and failed["status"] == "FAILED"

    def grown(now: dict[str, int]) -> bool:
        return (
            now["totalTasks"] - before["totalTasks"] >= 4
            and now["successfulTasks"] - before["successfulTasks"] >= 3
            and now["failedTasks"] - before["failedTasks"] >= 1
        )

    after = eventually(
        lambda: gateway.get("/api/stats/tasks").json(), grown, timeout=10.0, what="statistics counted"
    )
    # Exactly once: the stream mapping's batches are not counted twice.
    assert after["totalTasks"] - before["totalTasks"] == 4
    assert after["successfulTasks"] - before["successfulTasks"] == 3
    assert after["failedTasks"] - before["failedTasks"] == 1
    servers = {top["serverId"] for top in after["topServers"]}
    assert backends["sync"].server_id in servers

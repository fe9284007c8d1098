"""Statistics over HTTP: a `taskgate serve` of its own (stats are global to a deployment) and
`taskgate mock-backend` processes on loopback, then /api/stats/*, the load balancer routes and
/metrics as a client sees them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.domain.balancer import ALGORITHMS
from core.local.sqlite import SqliteStore
from tests.support.waiting import eventually

from .harness import RATE_LIMITS_OFF, SECRET, Api, _free_port, _wait_healthy, unique

CLI = [sys.executable, "-m", "tools.cli"]
# Sweeps and health checks every few hundred ms, short backoffs.
FAST_TIMERS = {
    "SWEEP_INTERVAL": "200",
    "HEALTH_CHECK_INTERVAL": "300",
    "HEALTH_CHECK_TIMEOUT": "2000",
    "RETRY_BASE_DELAY": "50",
    "RETRY_MAX_DELAY": "200",
    "FLEET_CACHE": "200",
}
TERMINAL = ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED")
SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (?P<value>[-+]?(?:[0-9.eE+-]+|Inf|NaN))$'
)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Gateway:
    base: str
    api: Api
    # The test's own connection to the gateway's SQLite file (WAL allows a second process).
    store: SqliteStore


@dataclass
class Backend:
    server_id: str
    base: str

    def control(self, **changes: Any) -> None:
        reply = httpx.post(f"{self.base}/_control", json=changes, timeout=10.0)
        assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("stats")
    port, db, log = _free_port(), tmp / "gateway.db", tmp / "gateway.log"
    env = {**os.environ, "JWT_SECRET": SECRET, **RATE_LIMITS_OFF, **FAST_TIMERS}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, "serve", "--db", str(db), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, base, log)
        store = SqliteStore(str(db))
        try:
            with httpx.Client(base_url=base, timeout=30.0) as client:
                yield Gateway(base, Api("serve", client, store, SECRET), store)
        finally:
            store.close()
    finally:
        _stop(proc)


@pytest.fixture
def backend(tmp_path: Path, gateway: Gateway) -> Iterator[Callable[..., Backend]]:
    """Starts a mock backend (with `taskgate mock-backend` flags) and registers it; every one
    is unregistered and stopped at teardown."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []

    def start(prefix: str, *flags: str, **registration: Any) -> Backend:
        server_id, port = unique(prefix), _free_port()
        base, log = f"http://127.0.0.1:{port}", tmp_path / f"{server_id}.log"
        args = [*CLI, "mock-backend", "--port", str(port), f"--server-id={server_id}", *flags]
        with log.open("wb") as out:
            started.append((subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT), server_id))
        _wait_healthy(started[-1][0], base, log)
        body = {
            "id": server_id,
            "name": server_id,
            "endpoints": {name: f"{base}/{name}" for name in ("predict", "health", "metrics")},
            **registration,
        }
        gateway.api.post("/api/servers", json=body, token=gateway.api.admin).ok()
        return Backend(server_id, base)

    yield start
    for proc, server_id in started:
        gateway.api.delete(f"/api/servers/{server_id}", token=gateway.api.admin)
        _stop(proc)


def submit(api: Api, owner: str, capability: str) -> str:
    body = {"type": "stats-e2e", "priority": 1, "payload": {}, "capabilities": [capability]}
    return str(api.post("/api/task", json=body, token=owner).ok()["id"])


def wait_for(api: Api, task_id: str, *statuses: str, timeout: float = 15.0) -> dict[str, Any]:
    return eventually(
        lambda: api.task(task_id),
        lambda task: task["status"] in statuses,
        timeout=timeout,
        what=f"{task_id} {'/'.join(statuses)}",
        interval=0.05,
    )


def clear_of_the_hour_end(margin_s: float = 45) -> None:
    """The test counts everything in the current UTC hour (and day): start it after the turn
    of the hour rather than just before."""
    left = 3600 - time.time() % 3600
    if left < margin_s:
        time.sleep(left + 0.5)


def today_and_hour() -> tuple[str, int]:
    now = datetime.now(UTC)
    return now.date().isoformat(), now.hour


def scrape(base: str) -> dict[str, float]:
    """GET /metrics without a token; every sample line must be `name{labels} value`."""
    reply = httpx.get(f"{base}/metrics", timeout=10.0)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for line in reply.text.splitlines():
        if not line or line.startswith("#"):
            assert not line or re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* \S", line), line
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        samples[f"{match['name']}{match['labels'] or ''}"] = float(match["value"])
    return samples


def processing_ms(*tasks: dict[str, Any]) -> int:
    times: list[int] = [task["completedAt"] - task["startedAt"] for task in tasks]
    return round(sum(times) / len(times))


def test_a_day_of_tasks_in_the_stats(gateway: Gateway, backend: Callable[..., Backend]) -> None:
    api = gateway.api
    clear_of_the_hour_end()
    dispatched_before = scrape(gateway.base).get("taskgate_dispatch_latency_seconds_count", 0)
    good = backend("a-good", capabilities=["good"], priority=3, maxConcurrent=4)
    bad = backend("b-bad", "--fail-rate=1", "--fail-status=400", capabilities=["bad"])
    owner = api.user()
    # GIVEN 6 tasks: 3 complete on `good`; on `bad` one fails (a 400), another fails, is
    # retried and completes; one is cancelled while PENDING (no server can take it).
    completed = [submit(api, owner, "good") for _ in range(3)]
    failed, retried = submit(api, owner, "bad"), submit(api, owner, "bad")
    cancelled = submit(api, owner, "nobody-has-this")
    for task_id in (*completed, failed, retried):
        wait_for(api, task_id, *TERMINAL)
    api.post(f"/api/task/{cancelled}/cancel", token=owner).ok()
    bad.control(failRate=0)
    api.post(f"/api/task/{retried}/retry", token=owner).ok()
    wait_for(api, retried, "COMPLETED")
    tasks = {task_id: api.task(task_id) for task_id in (*completed, failed, retried, cancelled)}
    assert [task["status"] for task in tasks.values()] == [
        *["COMPLETED"] * 3,
        "FAILED",
        "COMPLETED",
        "CANCELLED",
    ]
    day, hour = today_and_hour()
    user = api.user()

    finished = [tasks[t] for t in (*completed, retried)]
    stats = api.get(f"/api/stats/tasks?date={day}", token=user).ok()
    assert stats == {
        "totalTasks": 6,
        "pendingTasks": 0,
        "successfulTasks": 4,
        "failedTasks": 2,
        "retriedTasks": 1,
        "averageProcessingTime": processing_ms(*finished),
        "serverCount": 2,
        "topServers": [
            {"serverId": good.server_id, "tasksProcessed": 3, "successRate": 1.0},
            {"serverId": bad.server_id, "tasksProcessed": 3, "successRate": 0.3333},
        ],
        "hourlyTrend": [{"hour": h, "tasks": 6 if h == hour else 0} for h in range(24)],
    }
    assert api.get("/api/stats/tasks", token=api.admin).ok() == stats  # today by default

    hourly = api.get(f"/api/stats/hourly?date={day}", token=user).ok()
    quiet = {"created": 0, "completed": 0, "failed": 0, "averageTime": 0}
    busy = {"created": 6, "completed": 4, "failed": 2, "averageTime": processing_ms(*finished)}
    assert hourly == {
        "date": day,
        "hours": [{"hour": h, **(busy if h == hour else quiet)} for h in range(24)],
    }

    good_stats = api.get(f"/api/stats/servers/{good.server_id}?date={day}", token=user).ok()
    assert 0 < good_stats.pop("uptime") <= 1  # health checks every 300 ms
    assert good_stats == {
        "serverId": good.server_id,
        "tasksProcessed": 3,
        "successCount": 3,
        "failureCount": 0,
        "successRate": 1.0,
        "averageProcessingTime": processing_ms(*(tasks[t] for t in completed)),
    }
    bad_stats = api.get(f"/api/stats/servers/{bad.server_id}", token=user).ok()
    assert 0 < bad_stats.pop("uptime") <= 1
    assert bad_stats == {
        "serverId": bad.server_id,
        "tasksProcessed": 3,
        "successCount": 1,
        "failureCount": 2,
        "successRate": 0.3333,
        "averageProcessingTime": processing_ms(tasks[retried]),
    }
    # unhealthy heartbeats count against the day's uptime
    for _ in range(3):
        heartbeat = f"/api/servers/{bad.server_id}/heartbeat"
        api.post(heartbeat, json={"status": "unhealthy"}, token=api.service(bad.server_id)).ok()
    assert api.get(f"/api/stats/servers/{bad.server_id}", token=user).ok()["uptime"] < 1

    # /metrics: public Prometheus text
    samples = scrape(gateway.base)
    assert samples["taskgate_dispatch_latency_seconds_count"] - dispatched_before == 6  # 3 + 1 + 2
    assert (
        samples['taskgate_dispatch_latency_seconds_bucket{le="+Inf"}']
        == samples["taskgate_dispatch_latency_seconds_count"]
    )
    assert samples['taskgate_tasks_finished_today{status="COMPLETED"}'] == 4
    assert samples['taskgate_tasks_finished_today{status="FAILED"}'] == 2
    assert samples['taskgate_tasks_finished_today{status="CANCELLED"}'] == 1
    assert samples['taskgate_tasks{status="PENDING"}'] == samples["taskgate_queue_depth"] == 0
    assert samples['taskgate_tasks{status="PROCESSING"}'] == 0
    assert samples[f'taskgate_server_max_concurrent{{server="{good.server_id}"}}'] == 4
    assert samples[f'taskgate_server_active_tasks{{server="{bad.server_id}"}}'] == 0

    # who may not read, and what is refused
    api.get("/api/stats/tasks", token=api.service(good.server_id)).error(403, "Forbidden")
    api.get("/api/stats/hourly").error(401, "Unauthorized")
    api.get("/api/stats/servers/nope-123", token=user).error(
        404, "Not found", details="Server not found: nope-123"
    )
    for bad_date in ("2024-02-30", "06-01-2024", "2024-1-6", ""):
        api.get(f"/api/stats/hourly?date={bad_date}", token=user).error(
            400, "Invalid request", mentions="Invalid query parameter date: "
        )


def test_load_balancer_status_and_algorithm(gateway: Gateway, backend: Callable[..., Backend]) -> None:
    api = gateway.api
    user = api.user()
    server = backend("lb", maxConcurrent=4, priority=2)
    held = api.create_task(user)  # needs a capability no server has: it waits
    api.start_processing(held, server.server_id)  # the test claims it, as dispatch would
    status = api.get("/api/stats/load-balancer", token=user).ok()
    assert status == {
        "algorithm": "least-connections",
        "serverDistribution": {server.server_id: {"load": 0.25, "activeTasks": 1, "weight": 2}},
        "totalActiveTasks": 1,
        "averageLoad": 0.25,
    }

    path = "/api/stats/load-balancer/algorithm"
    assert api.post(path, json={"algorithm": "weighted-round-robin"}, token=api.admin).ok() == {
        "message": "Load balancer algorithm updated",
        "algorithm": "weighted-round-robin",
    }
    assert api.get("/api/stats/load-balancer", token=user).ok()["algorithm"] == "weighted-round-robin"
    assert gateway.store.get_setting("lb_algorithm") == "weighted-round-robin"

    api.post(path, json={"algorithm": "random"}, token=user).error(
        403, "Forbidden", details="Admin role required"
    )
    refused = api.post(path, json={"algorithm": "fastest"}, token=api.admin).error(400, "Invalid request")
    assert refused.startswith("Invalid field algorithm: 'fastest'"), refused
    assert all(name in refused for name in ALGORITHMS), refused
    api.post(path, json={}, token=api.admin).error(400, details="Missing required field: algorithm")
    api.post(path, json={"algorithm": "random", "x": 1}, token=api.admin).error(
        400, details="Unknown field: x"
    )
    api.get("/api/stats/load-balancer", token=api.service(server.server_id)).error(403)
    assert gateway.store.get_setting("lb_algorithm") == "weighted-round-robin"

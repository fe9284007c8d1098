"""The CLI's rendering where a real gateway adds nothing: the progress line's width, and a
table that stays aligned whatever the servers are called. The commands themselves run as
processes in tests/e2e/test_client_cli.py."""

from __future__ import annotations

import io
from typing import Any

import httpx
import msgspec
import pytest

from taskgate.cli_commands import ProgressView, progress_line, servers_table, tasks_table, waiting_line
from taskgate.cli_commands.render import chunk_line, range_text, stats_text
from taskgate.cli_commands.tasks import finished, follow
from taskgate.client import Client
from taskgate.errors import NotFound
from taskgate.models import QueueInfo, QueueSummary, RangeStats, Server, Task, TaskStats, TaskSummary


def task(status: str, progress: int) -> Task:
    body = {
        "id": "task_1",
        "type": "demo",
        "priority": 1,
        "status": status,
        "progress": progress,
        "serverId": None,
        "result": None,
        "error": None,
        "attempts": 0,
        "createdAt": 1,
        "updatedAt": 1,
    }
    return msgspec.convert(body, Task)


def server(server_id: str, name: str, **changes: Any) -> Server:
    body = {
        "id": server_id,
        "name": name,
        "status": "online",
        "registeredAt": 1,
        "lastHeartbeat": None,
        "uptime": 0,
        "timeSinceLastHeartbeat": None,
        "groups": [],
        "priority": 1,
        "capabilities": [],
        "maxConcurrent": 10,
        "activeTasks": 0,
        "endpoints": {"predict": "http://a/p", "health": "http://a/h"},
        "maintenanceReason": None,
        "health": {"status": None, "lastHeartbeat": None, "lastCheckAt": None, "consecutiveFailures": 0},
        **changes,
    }
    return msgspec.convert(body, Server)


def test_the_progress_line_has_one_width_for_every_reading() -> None:
    lines = [
        progress_line(task(status, p))
        for status, p in [("PENDING", 0), ("PROCESSING", 45), ("CANCELLED", 45), ("COMPLETED", 100)]
    ]
    assert lines[1] == "[#############.................]  45% PROCESSING"
    assert lines[3] == "[##############################] 100% COMPLETED "
    assert len({len(line) for line in lines}) == 1


def test_the_table_keeps_its_columns_when_names_hold_tabs_and_newlines() -> None:
    table = servers_table(
        [
            server("gpu-1", "rack\t4\nslot 2", capabilities=["video", "image"], activeTasks=3),
            server("a-much-longer-server-id", "x", status="maintenance"),
        ]
    )
    assert table.splitlines() == [
        "ID                       NAME           STATUS       HEALTH  ACTIVE/MAX  CAPABILITIES",
        "gpu-1                    rack 4 slot 2  online       -       3/10        video,image",
        "a-much-longer-server-id  x              maintenance  -       0/10        -",
    ]


def test_no_servers_is_the_header_alone() -> None:
    assert servers_table([]) == "ID  NAME  STATUS  HEALTH  ACTIVE/MAX  CAPABILITIES"


# -- the newer renderings ------------------------------------------------------------------


def test_a_pending_task_that_says_why_it_waits_shows_the_reason() -> None:
    waiting = msgspec.convert(
        {**msgspec.to_builtins(task("PENDING", 0)), "queue": {"reason": "capacity_full", "details": "x"}},
        Task,
    )
    assert progress_line(waiting) == "[..............................]   0% PENDING    waiting: capacity_full"
    running = msgspec.convert(
        {**msgspec.to_builtins(task("PROCESSING", 5)), "queue": {"reason": "x", "details": "d"}}, Task
    )
    assert "waiting" not in progress_line(running)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_view_draws_a_change_once_and_clears_a_longer_line() -> None:
    piped = io.StringIO()
    view = ProgressView(piped)
    for reading in (task("PROCESSING", 10), task("PROCESSING", 10), task("PROCESSING", 20)):
        view(reading)
    view.end()
    assert piped.getvalue().splitlines() == [
        progress_line(task("PROCESSING", 10)),
        progress_line(task("PROCESSING", 20)),
    ]

    terminal = Terminal()
    view = ProgressView(terminal)
    waiting = msgspec.convert(
        {**msgspec.to_builtins(task("PENDING", 0)), "queue": {"reason": "backoff", "details": "d"}}, Task
    )
    view(waiting)
    view(task("PROCESSING", 50))
    view.end()
    first, second = terminal.getvalue().removesuffix("\n").split("\r")[1:]
    assert len(second) == len(first) and second.rstrip() == progress_line(task("PROCESSING", 50)).rstrip()


def test_the_task_table_and_the_stats_text() -> None:
    summary = msgspec.convert(
        {"id": "t\t1", "type": "demo", "priority": 9, "status": "FAILED", "progress": 30, "serverId": "gpu-1",
         "attempts": 3, "createdAt": 1_764_860_400_000, "updatedAt": 1}, TaskSummary,
    )  # fmt: skip
    assert tasks_table([summary]).splitlines() == [
        "ID   TYPE  STATUS  PROGRESS  PRIORITY  ATTEMPTS  SERVER  CREATED",
        "t 1  demo  FAILED  30%       9         3         gpu-1   2025-12-04T15:00:00Z",
    ]
    day = msgspec.convert(
        {"totalTasks": 5, "pendingTasks": 1, "successfulTasks": 3, "failedTasks": 1, "retriedTasks": 0,
         "averageProcessingTime": 120, "serverCount": 1,
         "topServers": [{"serverId": "gpu-1", "tasksProcessed": 4, "successRate": 0.75}],
         "hourlyTrend": [{"hour": h, "tasks": 5 if h == 15 else 0} for h in range(24)]}, TaskStats,
    )  # fmt: skip
    queue = msgspec.convert(
        {"pending": 1, "pendingByPriority": [{"priority": 3, "count": 1}], "processing": 2, "capacity": 8,
         "backlog": [{"capabilities": ["tpu"], "count": 1, "reason": "no_capable_server",
                      "details": "1 task needs `tpu`: no registered server has `tpu`"}]},
        QueueSummary,
    )  # fmt: skip
    assert stats_text(day, queue, "2025-12-04").splitlines() == [
        "tasks on 2025-12-04 (UTC): 5 created, 3 completed, 1 failed or timed out, 0 retried; "
        "average processing time 120 ms",
        "queue now: 1 pending, 2 in flight, 8 slots online",
        "  pending by priority: priority 3: 1",
        "  waiting (no_capable_server): 1 task needs `tpu`: no registered server has `tpu`",
        "servers: 1",
        "  gpu-1: 4 tasks, 75% succeeded",
        "tasks per hour (UTC): 15h 5",
    ]
    assert [chunk_line(c) for c in ("text as is", {"a": [1]}, None, 3)] == [
        "text as is",
        '{"a":[1]}',
        "null",
        "3",
    ]


# -- following a task ------------------------------------------------------------------------


def running(status: str, progress: int, **more: Any) -> dict[str, Any]:
    return {**msgspec.to_builtins(task(status, progress)), **more}


def test_follow_prints_chunks_on_stdout_as_they_come_and_progress_on_stderr() -> None:
    events = (
        "event: status\ndata: " + msgspec.json.encode(running("PROCESSING", 0)).decode() + "\n\n"
        'event: output\ndata: {"index": 0, "data": "Hello"}\n\n'
        "event: status\ndata: "
        + msgspec.json.encode(running("PROCESSING", 50, message="half")).decode()
        + "\n\n"
        'event: output\ndata: {"index": 1, "data": {"tokens": 2}}\n\n'
        "event: done\ndata: "
        + msgspec.json.encode(running("COMPLETED", 100, result={"n": 2})).decode()
        + "\n\n"
    )

    def gateway(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/task/task_1/stream"
        return httpx.Response(200, content=events.encode(), headers={"Content-Type": "text/event-stream"})

    out, err = io.StringIO(), io.StringIO()
    with Client("http://gw.test", "t", transport=httpx.MockTransport(gateway)) as client:
        done = follow(client, "task_1", None, out, err)
    assert finished(done, out, err) == 0
    assert out.getvalue() == 'Hello\n{"tokens":2}\n{\n  "n": 2\n}\n'
    assert err.getvalue().splitlines() == [
        progress_line(task("PROCESSING", 0)),
        progress_line(task("PROCESSING", 50)),
        progress_line(task("COMPLETED", 100)),
    ]


def test_follow_polls_a_gateway_without_streaming() -> None:
    readings = iter([running("PROCESSING", 40), running("FAILED", 40, error="boom")])

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            body = {"error": "Not found", "details": f"No route for GET {request.url.path}"}
            return httpx.Response(404, json=body)
        return httpx.Response(200, json=next(readings))

    out, err = io.StringIO(), io.StringIO()
    with Client("http://gw.test", "t", transport=httpx.MockTransport(gateway)) as client:
        done = follow(client, "task_1", 30, out, err)
        assert finished(done, out, err) == 1
    assert out.getvalue() == ""
    assert err.getvalue().splitlines()[-1] == "task_1 FAILED: boom"

    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "Not found", "details": "Task not found: task_1"})

    with (
        Client("http://gw.test", "t", transport=httpx.MockTransport(missing)) as client,
        pytest.raises(NotFound),
    ):
        follow(client, "task_1", 30, io.StringIO(), io.StringIO())


def test_a_range_of_days_is_its_totals_and_a_line_per_day() -> None:
    days = [
        {"date": f"2026-12-0{n}", "created": n, "completed": n - 1, "failed": 1, "cancelled": 0, "retried": 0, "averageTime": 10 * n}
        for n in (3, 4)
    ]  # fmt: skip
    stats = msgspec.convert(
        {"start": "2026-12-03", "end": "2026-12-04", "totalTasks": 7, "successfulTasks": 5, "failedTasks": 2,
         "retriedTasks": 0, "averageProcessingTime": 35, "topServers": [], "daily": days}, RangeStats,
    )  # fmt: skip
    queue = msgspec.convert(
        {"pending": 0, "pendingByPriority": [], "processing": 0, "capacity": 4}, QueueSummary
    )
    assert range_text(stats, queue).splitlines() == [
        "tasks from 2026-12-03 to 2026-12-04 (UTC): 7 created, 5 completed, 2 failed or timed out, 0 retried; "
        "average processing time 35 ms",
        "queue now: 0 pending, 0 in flight, 4 slots online",
        "DATE        CREATED  COMPLETED  FAILED  CANCELLED  RETRIED  AVERAGE MS",
        "2026-12-03  3        2          1       0          0        30",
        "2026-12-04  4        3          1       0          0        40",
    ]


def test_the_waiting_line_gives_the_reason_and_what_is_known() -> None:
    full = msgspec.convert(
        {
            "reason": "capacity_full",
            "details": "every slot is taken",
            "position": 3,
            "estimatedStartAt": 1_796_398_202_000,
        },
        QueueInfo,
    )
    assert waiting_line(full) == (
        "waiting (capacity_full, position 3, start expected 2026-12-04T15:30:02Z): every slot is taken"
    )
    bare = msgspec.convert(
        {"reason": "no_capable_server", "details": "no registered server has `tpu`"}, QueueInfo
    )
    assert waiting_line(bare) == "waiting (no_capable_server): no registered server has `tpu`"


def test_a_task_from_a_gateway_without_explanations_still_reads() -> None:
    old = task("PENDING", 0)
    assert (old.capabilities, old.queue) == ([], None)
    newer = msgspec.convert(
        {
            **msgspec.to_builtins(old),
            "capabilities": ["gpu"],
            "queue": {"reason": "some_new_reason", "details": "d"},
        },
        Task,
    )
    assert (
        newer.capabilities == ["gpu"] and newer.queue is not None and newer.queue.reason == "some_new_reason"
    )

"""The CLI's rendering where a real gateway adds nothing: the progress line's width, and a
table that stays aligned whatever the servers are called. The commands themselves run as
processes in tests/e2e/test_client_cli.py."""

from __future__ import annotations

from typing import Any

import msgspec

from taskgate.cli_commands import progress_line, servers_table, waiting_line
from taskgate.models import QueueInfo, Server, Task


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

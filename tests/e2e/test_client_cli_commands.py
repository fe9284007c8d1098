"""The CLI's task list, statistics, server administration, `submit --webhook` and `--sync`,
a closed reader, and `taskgate dev`'s announcement, run as a user runs them: real processes
against a real `taskgate serve`, real mock backends and a real webhook receiver, on loopback."""

from __future__ import annotations

import datetime
import json
import os
import queue
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskgate.client import Client
from taskgate.errors import TaskgateError
from tests.support.waiting import eventually

from .fleet import CLI, Fleet, Gateway, Mock, free_port, start_gateway
from .harness import HELD, unique
from .test_backend_sdk import uvicorn_backend
from .test_client_cli import environment, gateway_flags, taskgate
from .webhook_receiver import start_receiver


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # Webhook receivers of these tests listen on loopback, which `serve` refuses unless allowed.
    settings = {"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}
    with start_gateway(tmp_path_factory.mktemp("cli-commands"), spares=2, **settings) as gateway:
        yield gateway


@pytest.fixture
def fleet(gateway: Gateway) -> Iterator[Fleet]:
    with Fleet(gateway) as fleet:
        yield fleet


def submit_held(fleet: Fleet, priority: int) -> str:
    args = ["--type", "e2e-list", "--payload", "{}", "--capability", HELD, "--priority", str(priority)]
    done = taskgate("submit", *gateway_flags(fleet), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- tasks list ----------------------------------------------------------------------------


def test_tasks_list_filters_pages_and_shows_only_the_users_own(fleet: Fleet) -> None:
    ids = [submit_held(fleet, priority) for priority in (1, 5, 9)]  # oldest first
    fleet.cancel(ids[0])
    other = fleet.api.create_task(fleet.api.user())  # another user's: never listed here

    first = taskgate("tasks", "list", "--status", "pending", "--limit", "1", *gateway_flags(fleet))

    assert first.returncode == 0, first.stderr
    header, *rows = first.stdout.splitlines()
    assert header.split() == ["ID", "TYPE", "STATUS", "PROGRESS", "PRIORITY", "ATTEMPTS", "SERVER", "CREATED"]
    assert [row.split()[:5] for row in rows] == [[ids[2], "e2e-list", "PENDING", "0%", "9"]]
    assert re.fullmatch(r"\S+ +e2e-list +PENDING +0% +9 +0 +- +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[0])
    cursor = re.fullmatch(r"more: --cursor (\S+)\n", first.stderr)
    assert cursor, first.stderr

    second = taskgate(
        "tasks", "list", "--status", "PENDING", "--limit", "1", "--cursor", cursor[1], *gateway_flags(fleet)
    )
    assert [row.split()[0] for row in second.stdout.splitlines()[1:]] == [ids[1]]
    assert second.stderr == ""  # the last page: no cursor

    every = taskgate("tasks", "list", "--all", "--limit", "1", "--json", *gateway_flags(fleet))
    listed = json.loads(every.stdout)
    assert [(t["id"], t["status"]) for t in listed] == [
        (ids[2], "PENDING"),
        (ids[1], "PENDING"),
        (ids[0], "CANCELLED"),
    ]
    assert other not in every.stdout and "payload" not in listed[0]
    for task_id in ids[1:]:
        fleet.cancel(task_id)


def test_tasks_list_refuses_a_bad_filter(fleet: Fleet) -> None:
    done = taskgate("tasks", "list", "--status", "sleeping", *gateway_flags(fleet))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("error: 400 ") and "status" in done.stderr


# -- servers -------------------------------------------------------------------------------


def test_servers_register_maintenance_and_remove(fleet: Fleet) -> None:
    (backend,) = fleet.start(Mock())
    admin = gateway_flags(fleet, fleet.api.admin)
    group = unique("group")
    endpoints = ["--predict", backend.endpoints["predict"], "--health", backend.endpoints["health"]]

    registered = taskgate(
        "servers", "register", "gpu box", *endpoints, "--id", backend.server_id,
        "--capability", fleet.capability, "--group", group, "--max-concurrent", "3", "--priority", "2", *admin,
    )  # fmt: skip

    assert registered.returncode == 0, registered.stderr
    fleet.server_ids.append(backend.server_id)
    assert registered.stdout == f"{backend.server_id}\n"
    assert re.fullmatch(
        r"Server registered successfully; its service token \(for heartbeats\): \S+\n", registered.stderr
    )
    (server,) = json.loads(taskgate("servers", "list", "--group", group, "--json", *admin).stdout)
    assert (server["name"], server["maxConcurrent"], server["priority"], server["capabilities"]) == (
        "gpu box",
        3,
        2,
        [fleet.capability],
    )
    again = taskgate("servers", "register", "again", *endpoints, "--id", backend.server_id, *admin)
    assert again.returncode == 2 and again.stderr.startswith("error: 409 ")

    first_token = registered.stderr.rsplit(" ", 1)[1].strip()
    rotated = taskgate("servers", "token", backend.server_id, *admin)
    assert rotated.returncode == 0, rotated.stderr
    new_token = rotated.stdout.strip()
    assert new_token and new_token != first_token
    with Client(fleet.gateway.base, new_token) as own:
        assert own.heartbeat(backend.server_id).server_id == backend.server_id
    with Client(fleet.gateway.base, first_token) as old, pytest.raises(TaskgateError) as refused:
        old.heartbeat(backend.server_id)
    assert refused.value.status in (401, 403)

    on = taskgate("servers", "maintenance", backend.server_id, "on", "--reason", "disk swap", *admin)
    assert on.stdout == f"Maintenance mode enabled: {backend.server_id} is maintenance\n", on.stderr
    (server,) = json.loads(taskgate("servers", "list", "--group", group, "--json", *admin).stdout)
    assert (server["status"], server["maintenanceReason"]) == ("maintenance", "disk swap")
    wrong = taskgate("servers", "maintenance", backend.server_id, "off", "--reason", "x", *admin)
    assert (wrong.returncode, wrong.stderr) == (2, "error: --reason goes with maintenance on\n")
    off = taskgate("servers", "maintenance", backend.server_id, "off", *admin)
    assert off.stdout.startswith(f"Maintenance mode disabled: {backend.server_id} is "), off.stderr

    removed = taskgate("servers", "remove", backend.server_id, *admin)
    assert removed.stdout == f"Server unregistered: {backend.server_id}\n"
    assert json.loads(taskgate("servers", "list", "--group", group, "--json", *admin).stdout) == []
    gone = taskgate("servers", "remove", backend.server_id, *admin)
    assert gone.returncode == 2 and gone.stderr.startswith("error: 404 ")
    fleet.server_ids.remove(backend.server_id)

    as_user = taskgate("servers", "register", "x", *endpoints, *gateway_flags(fleet))
    assert as_user.stderr == "error: 403 Forbidden: Admin role required\n"


# -- statistics ----------------------------------------------------------------------------


def test_stats_prints_the_day_and_the_queue(fleet: Fleet) -> None:
    (backend,) = fleet.add(Mock())
    fleet.submit_and_wait()
    held = submit_held(fleet, 7)
    today = datetime.datetime.now(datetime.UTC).date().isoformat()

    done = taskgate("stats", *gateway_flags(fleet))

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(
        rf"tasks on {today} \(UTC\): \d+ created, [1-9]\d* completed, \d+ failed or timed out, "
        r"\d+ retried; average processing time \d+ ms",
        lines[0],
    ), lines
    assert re.fullmatch(r"queue now: [1-9]\d* pending, \d+ in flight, \d+ slots online", lines[1]), lines
    assert "priority 7: " in lines[2], lines
    assert any(re.fullmatch(r"tasks per hour \(UTC\): .*\d\dh [1-9]\d*.*", line) for line in lines), lines

    as_json = json.loads(taskgate("stats", "--json", *gateway_flags(fleet)).stdout)
    assert as_json["queue"]["pending"] >= 1 and len(as_json["tasks"]["hourlyTrend"]) == 24
    server = json.loads(
        taskgate("stats", "--server", backend.server_id, *gateway_flags(fleet, fleet.api.admin)).stdout
    )
    assert (server["serverId"], server["tasksProcessed"]) == (backend.server_id, 1)
    bad = taskgate("stats", "--date", "2026-13-45", *gateway_flags(fleet))
    assert bad.returncode == 2 and bad.stderr.startswith("error: 400 ")
    fleet.cancel(held)
    fleet.assert_settled()


# -- submit --webhook, --sync --------------------------------------------------------------


def test_submit_with_a_webhook_delivers_the_finished_task(fleet: Fleet, tmp_path: Path) -> None:
    fleet.add(Mock())
    receiver = start_receiver(tmp_path)
    try:
        args = ["--type", "e2e-hook", "--payload", '{"n": 1}', "--capability", fleet.capability]
        done = taskgate("submit", *args, "--webhook", receiver.url, "--wait", *gateway_flags(fleet))
        assert done.returncode == 0, done.stderr
        task_id = done.stdout.splitlines()[0]
        fleet.task_ids.append(task_id)
        (delivered,) = receiver.wait_requests(1)
        body = json.loads(delivered["body"])
        assert (body["id"], body["status"]) == (task_id, "COMPLETED")

        shown = eventually(
            lambda: json.loads(taskgate("tasks", "webhooks", task_id, *gateway_flags(fleet)).stdout),
            lambda body: [d["state"] for d in body["deliveries"]] == ["delivered"],
            timeout=10,
            what="the delivery recorded",
        )
        assert (shown["taskId"], shown["webhook"]) == (task_id, receiver.url)
        assert shown["deliveries"][0]["attempts"][0]["statusCode"] == 200
    finally:
        receiver.proc.kill()
        receiver.proc.wait()
    fleet.assert_settled()


def test_submit_sync_prints_the_id_and_the_result_in_one_request(fleet: Fleet) -> None:
    fleet.add(Mock(delay_ms=300))
    args = ["--type", "e2e-sync", "--payload", '{"q": 2}', "--capability", fleet.capability, "--sync"]

    done = taskgate("submit", *args, *gateway_flags(fleet))

    assert done.returncode == 0, done.stderr
    task_id, *result = done.stdout.splitlines()
    fleet.task_ids.append(task_id)
    assert json.loads("\n".join(result))["echo"] == {"q": 2}
    assert done.stderr == ""  # no progress: one request, no polling
    assert fleet.task(task_id)["status"] == "COMPLETED"
    fleet.assert_settled()


def test_submit_sync_with_max_wait_gives_up_after_that_wait(fleet: Fleet) -> None:
    args = ["--type", "e2e-sync", "--payload", "{}", "--capability", HELD, "--sync", "--max-wait", "1"]

    done = taskgate("submit", *args, *gateway_flags(fleet))

    task_id = done.stdout.strip()
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: task {task_id} not finished within the wait (status PENDING)\n"
    fleet.cancel(task_id)
    refused = taskgate("submit", *args[:-1], "61", *gateway_flags(fleet))
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == "error: wait must be from 1 to 60 seconds\n"


def test_submit_wait_prints_output_chunks_as_they_come(fleet: Fleet, tmp_path: Path) -> None:
    here = Path(__file__).parents[2]
    admin = Client(fleet.gateway.base, fleet.api.admin)
    with admin, uvicorn_backend(admin, tmp_path, "tests.e2e.sdk_backend:app", app_dir=here) as backend:
        gate = tmp_path / "go"
        payload = json.dumps({"gate": str(gate)})
        args = ["--type", "e2e-stream", "--payload", payload, "--capability", backend.capability, "--wait"]
        errors = tmp_path / "stderr"
        with errors.open("w") as stderr_file:
            waiting = subprocess.Popen(
                [*CLI, "submit", *args, *gateway_flags(fleet)],
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                env=environment(),
                text=True,
            )
        lines: queue.Queue[str] = queue.Queue()
        assert waiting.stdout is not None
        reader = threading.Thread(
            target=lambda: [lines.put(line) for line in waiting.stdout or []], daemon=True
        )
        reader.start()
        try:
            task_id = lines.get(timeout=30).strip()
            # The first chunk is printed while the task still runs (it waits for the gate).
            assert lines.get(timeout=30) == '{"step":1}\n'
            assert fleet.task(task_id)["status"] == "PROCESSING"
            gate.touch()
            assert waiting.wait(timeout=30) == 0, errors.read_text()
            reader.join(timeout=10)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
    chunk, *result = [lines.get_nowait() for _ in range(lines.qsize())]
    assert chunk == '{"step":2}\n'
    assert json.loads("".join(result)) == {"steps": 2, "type": "e2e-stream", "priority": 1}
    stderr = errors.read_text()
    readings = [line for line in stderr.splitlines() if line]
    assert readings[-1].startswith("[##############################] 100% COMPLETED"), stderr
    assert any(" 50% PROCESSING" in line for line in readings), stderr


# -- a closed reader -----------------------------------------------------------------------


def test_output_to_a_closed_reader_ends_quietly(fleet: Fleet) -> None:
    task_id = submit_held(fleet, 1)
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before anything is written: `| head -0`
    try:
        done = subprocess.run(
            [*CLI, "tasks", "get", task_id, *gateway_flags(fleet)],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
            timeout=60,
        )
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (141, "")
    fleet.cancel(task_id)


def test_tasks_get_piped_to_head_prints_its_first_line(fleet: Fleet) -> None:
    task_id = submit_held(fleet, 1)
    line = subprocess.run(
        ["bash", "-o", "pipefail", "-c", '"$@" | head -1', "taskgate", *CLI, "tasks", "get", task_id, *gateway_flags(fleet)],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=60,
    )  # fmt: skip
    assert line.stdout == "{\n" and "Traceback" not in line.stderr and "Broken" not in line.stderr, line
    fleet.cancel(task_id)


# -- taskgate dev --------------------------------------------------------------------------


def test_dev_announces_its_token_only_once_it_listens(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "dev", "--port", str(port), "--db", str(tmp_path / "dev.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=environment(),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"taskgate dev: http://127.0.0.1:{port}"), first
        # Printed means listening: the first request after it is answered.
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.status_code == 200
        lines = [proc.stdout.readline() for _ in range(5)]
        token = re.search(r"admin token \(7 days\): (\S+)", "".join(lines))
        assert token, lines
        servers = httpx.get(
            f"http://127.0.0.1:{port}/api/servers",
            headers={"Authorization": f"Bearer {token[1]}"},
            timeout=10,
        )
        assert servers.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("command", [["dev"], ["dev", "--aws"]], ids=["dev", "dev-aws"])
def test_dev_with_its_port_taken_says_so_and_prints_no_token(tmp_path: Path, command: list[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*CLI, *command, "--port", str(port), "--db", str(tmp_path / "dev.db")],
            capture_output=True,
            text=True,
            env=environment(),
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stdout == ""  # no URL, no token
    assert done.stderr.strip().splitlines()[-1] == (
        f"taskgate {' '.join(command)}: port {port} on 127.0.0.1 is taken (another process listens there); "
        "stop it or choose another with --port"
    )

"""The client commands of `taskgate` (submit, tasks, servers) run as a user runs them: real
processes against a real `taskgate serve` and real mock backends; and the examples of
docs/CLIENT.md, run as written."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import eventually

from .fleet import CLI, Fleet, Gateway, Mock, free_port, start_gateway
from .harness import HELD

CLIENT_DOC = Path(__file__).parents[2] / "docs" / "CLIENT.md"
# A PENDING task that says why it waits adds " waiting: <reason>".
PROGRESS = re.compile(r"^\[[#.]{30}\] +(?P<progress>\d+)% (?P<status>[A-Z]+) *(?: waiting: [a-z_]+ *)?$")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("cli"), spares=2) as gateway:
        yield gateway


@pytest.fixture
def fleet(gateway: Gateway) -> Iterator[Fleet]:
    with Fleet(gateway) as fleet:
        yield fleet


def environment(**values: str) -> dict[str, str]:
    """This process's environment without the client's variables, plus `values`."""
    base = {k: v for k, v in os.environ.items() if k not in ("TASKGATE_URL", "TASKGATE_TOKEN")}
    return {**base, **values}


def taskgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env or environment(), timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def gateway_flags(fleet: Fleet, token: str | None = None) -> list[str]:
    return ["--url", fleet.gateway.base, "--token", token or fleet.owner]


def progress_readings(lines: list[str]) -> list[tuple[int, str]]:
    readings = []
    for line in lines:
        match = PROGRESS.match(line)
        assert match, f"not a progress line: {line!r}"
        readings.append((int(match["progress"]), match["status"]))
    return readings


# -- submit --------------------------------------------------------------------------------


def test_submit_wait_prints_the_id_progress_lines_and_the_result(fleet: Fleet) -> None:
    fleet.add(Mock(mode="async", delay_ms=3000, progress_steps=3))
    env = environment(TASKGATE_URL=fleet.gateway.base, TASKGATE_TOKEN=fleet.owner)
    args = ["--type", "e2e-cli", "--payload", '{"prompt": "hi"}', "--capability", fleet.capability]

    done = taskgate("submit", *args, "--priority", "4", "--wait", env=env)

    assert done.returncode == 0, done.stderr
    task_id, *result = done.stdout.splitlines()
    fleet.task_ids.append(task_id)
    task = fleet.task(task_id)
    assert (task["status"], task["priority"]) == ("COMPLETED", 4)
    assert json.loads("\n".join(result)) == task["result"]
    assert task["result"]["echo"] == {"prompt": "hi"}
    # Not a terminal: a line per change, no carriage returns.
    assert "\r" not in done.stderr
    readings = progress_readings(done.stderr.splitlines())
    assert readings[-1] == (100, "COMPLETED")
    assert [p for p, _ in readings] == sorted(p for p, _ in readings), readings
    assert {p for p, status in readings if status == "PROCESSING"} & {25, 50, 75}, readings
    fleet.assert_settled()


def test_submit_wait_on_a_terminal_redraws_one_line(fleet: Fleet) -> None:
    fleet.add(Mock(mode="async", delay_ms=2000, progress_steps=3))
    args = ["--type", "e2e-cli", "--payload", "{}", "--capability", fleet.capability, "--wait"]
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, "submit", *gateway_flags(fleet), *args],
            stdout=subprocess.PIPE,
            stderr=terminal,
            env=environment(),
            text=True,
        )
        os.close(terminal)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        stdout, _ = proc.communicate(timeout=60)
    finally:
        os.close(controller)

    assert proc.returncode == 0, drawn
    fleet.task_ids.append(stdout.splitlines()[0])
    text = drawn.decode()
    # Every reading redrawn over the last with a carriage return; one newline, at the end.
    assert text.count("\n") == 1 and text.endswith("\n"), text
    frames = [frame for frame in text.rstrip("\r\n").split("\r") if frame]
    readings = progress_readings(frames)
    assert len(readings) >= 2 and readings[-1] == (100, "COMPLETED"), readings
    fleet.assert_settled()


def test_submit_wait_exits_1_with_the_error_when_the_task_fails(fleet: Fleet) -> None:
    fleet.add(Mock(fail_rate=1, fail_status=400))
    args = ["--type", "e2e-cli", "--payload", "{}", "--capability", fleet.capability, "--wait"]

    done = taskgate("submit", *gateway_flags(fleet), *args)

    assert done.returncode == 1, done.stderr
    task_id = done.stdout.strip()
    fleet.task_ids.append(task_id)
    task = fleet.task(task_id)
    assert task["status"] == "FAILED" and task["error"]
    assert done.stderr.splitlines()[-1] == f"{task_id} FAILED: {task['error']}"
    fleet.assert_settled()


def test_submit_wait_exits_1_when_the_task_is_cancelled_and_retry_queues_it_again(fleet: Fleet) -> None:
    args = ["--type", "e2e-cli", "--payload", "{}", "--capability", HELD, "--wait"]
    waiting = subprocess.Popen(
        [*CLI, "submit", *gateway_flags(fleet), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
        text=True,
    )
    try:
        assert waiting.stdout is not None
        task_id = waiting.stdout.readline().strip()
        cancelled = taskgate("tasks", "cancel", task_id, *gateway_flags(fleet))
        assert (cancelled.returncode, cancelled.stdout) == (0, f"Task cancelled: {task_id}\n")
        _, stderr = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 1, stderr
    cancelled_task = fleet.task(task_id)
    assert cancelled_task["status"] == "CANCELLED"
    assert stderr.splitlines()[-1] == f"{task_id} CANCELLED: {cancelled_task['error']}"

    retried = taskgate("tasks", "retry", task_id, *gateway_flags(fleet))
    assert (retried.returncode, retried.stdout) == (0, f"Task queued for retry: {task_id}\n")
    assert fleet.task(task_id)["status"] == "PENDING"
    fleet.cancel(task_id)


def test_ctrl_c_stops_the_wait_not_the_task(fleet: Fleet) -> None:
    args = ["--type", "e2e-cli", "--payload", "{}", "--capability", HELD, "--wait"]
    waiting = subprocess.Popen(
        [*CLI, "submit", *gateway_flags(fleet), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
        text=True,
    )
    try:
        assert waiting.stdout is not None
        task_id = waiting.stdout.readline().strip()
        eventually(lambda: fleet.task(task_id)["status"], lambda s: s == "PENDING", timeout=5, what="created")
        waiting.send_signal(signal.SIGINT)
        _, stderr = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 130 and stderr.splitlines()[-1] == "interrupted", stderr
    assert "Traceback" not in stderr
    assert fleet.task(task_id)["status"] == "PENDING"
    fleet.cancel(task_id)


def test_submit_without_wait_prints_only_the_id(fleet: Fleet) -> None:
    done = taskgate(
        "submit", *gateway_flags(fleet), "--type", "e2e-cli", "--payload", '{"a": 1}', "--capability", HELD
    )
    assert (done.returncode, done.stderr) == (0, "")
    task_id = done.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", task_id) and fleet.task(task_id)["status"] == "PENDING"
    fleet.cancel(task_id)


def test_wait_timeout_gives_up_with_exit_2(fleet: Fleet) -> None:
    args = ["--type", "e2e-cli", "--payload", "{}", "--capability", HELD, "--wait", "--wait-timeout", "0.5"]
    done = taskgate("submit", *gateway_flags(fleet), *args)
    task_id = done.stdout.strip()
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"error: task {task_id} not finished after 0.5 s (status PENDING)"
    fleet.cancel(task_id)


# -- tasks, servers ------------------------------------------------------------------------


def test_tasks_get_prints_the_task_as_indented_json(fleet: Fleet) -> None:
    fleet.add(Mock())
    task_id = fleet.submit_and_wait()["id"]

    done = taskgate("tasks", "get", task_id, *gateway_flags(fleet))

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == fleet.task(task_id)
    assert done.stdout.startswith('{\n  "id": ')
    fleet.assert_settled()


def test_tasks_get_of_a_waiting_task_says_why_on_stderr(fleet: Fleet) -> None:
    # GIVEN a server, and a task that needs a capability it does not have
    fleet.add(Mock())
    task_id = fleet.submit(capabilities=[HELD])

    # WHEN the CLI reads it
    done = taskgate("tasks", "get", task_id, *gateway_flags(fleet))

    # THEN stdout is the task as JSON, queue included, and stderr says why it waits
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["status"], shown["queue"]["reason"]) == ("PENDING", "no_capable_server")
    assert done.stderr == f"waiting (no_capable_server, position 1): no registered server has `{HELD}`\n"
    fleet.cancel(task_id)


def test_servers_list_prints_an_aligned_table(fleet: Fleet) -> None:
    first, second = fleet.start(Mock(prefix="a"), Mock(prefix="b"))
    fleet.register(first, max_concurrent=3)
    fleet.register(second, capabilities=[fleet.capability, "gpu"])
    fleet.gateway.api.post(
        f"/api/servers/{second.server_id}/maintenance", json={"maintenance": True}, token=fleet.api.admin
    ).ok()
    for backend in (first, second):  # the first health check lands within a moment
        eventually(
            lambda b=backend: fleet.server(b.server_id)["health"]["status"],
            lambda status: status == "healthy",
            timeout=10,
            what=f"{backend.server_id} healthy",
        )

    done = taskgate("servers", "list", *gateway_flags(fleet, fleet.api.admin))

    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    columns = ["ID", "NAME", "STATUS", "HEALTH", "ACTIVE/MAX", "CAPABILITIES"]
    assert header.split() == columns
    starts = [header.index(name) for name in columns]

    def cells(row: str) -> list[str]:
        bounds = [*starts[1:], None]
        return [row[start:end].strip() for start, end in zip(starts, bounds, strict=True)]

    by_id = {cells(row)[0]: cells(row) for row in rows}
    assert by_id[first.server_id] == [
        first.server_id,
        first.server_id,
        "online",
        "healthy",
        "0/3",
        fleet.capability,
    ]
    assert by_id[second.server_id] == [
        second.server_id,
        second.server_id,
        "maintenance",
        "healthy",
        "0/10",
        f"{fleet.capability},gpu",
    ]

    only = taskgate("servers", "list", "--status", "maintenance", *gateway_flags(fleet, fleet.api.admin))
    assert second.server_id in only.stdout and first.server_id not in only.stdout


# -- errors --------------------------------------------------------------------------------


def test_api_errors_print_one_line_and_exit_2(fleet: Fleet) -> None:
    base = fleet.gateway.base
    submit = ["submit", "--type", "e2e-cli", "--capability", HELD]
    cases = [
        (
            ["tasks", "get", "task_abc123", "--url", base, "--token", fleet.owner],
            "error: 404 Not found: Task not found: task_abc123",
        ),
        (
            ["tasks", "cancel", "task_abc123", "--url", base, "--token", "not-a-jwt"],
            "error: 401 Unauthorized: ",
        ),
        (
            ["servers", "list", "--url", base, "--token", fleet.owner],
            "error: 403 Forbidden: Admin role required",
        ),
        (
            [*submit, "--payload", "{}", "--priority", "11", "--url", base, "--token", fleet.owner],
            "error: 400 Invalid request: Invalid field priority: Expected `int` <= 10",
        ),
        (
            [*submit, "--payload", "{oops", "--url", base, "--token", fleet.owner],
            "error: --payload is not valid JSON: ",
        ),
        (
            ["tasks", "get", "task_abc123", "--url", f"http://127.0.0.1:{free_port()}", "--token", "t"],
            "error: Network error: GET http://127.0.0.1:",
        ),
    ]
    for args, expected in cases:
        done = taskgate(*args)
        assert (done.returncode, done.stdout) == (2, ""), (args, done.stdout, done.stderr)
        assert done.stderr.startswith(expected) and done.stderr.count("\n") == 1, (args, done.stderr)


# -- docs/CLIENT.md's examples --------------------------------------------------------------


def readme_block(language: str, starts: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", CLIENT_DOC.read_text(), re.S)
    found = [block for block in blocks if block.startswith(starts)]
    assert len(found) == 1, f"docs/CLIENT.md: expected one {language} block starting {starts!r}"
    return found[0]


def test_documented_python_client_example_works_as_written(fleet: Fleet) -> None:
    fleet.add(Mock(mode="async", delay_ms=1500, progress_steps=2))
    example = readme_block("python", "from taskgate.client import Client")
    env = environment(TASKGATE_URL=fleet.gateway.base, TASKGATE_TOKEN=fleet.owner)

    done = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, env=env, timeout=90
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] in ("PENDING 0", "PROCESSING 0"), lines
    assert any(line.startswith("PROCESSING ") for line in lines) and "COMPLETED 100" in lines, lines
    assert lines[-2].startswith("COMPLETED {'echo': {'prompt': 'hello'}"), lines
    assert lines[-1] == "404 Not found: Task not found: task_abc123", lines


def test_documented_cli_example_works_as_written(fleet: Fleet) -> None:
    fleet.add(Mock())
    example = readme_block("bash", "export TASKGATE_URL=").replace(
        "http://localhost:8787", fleet.gateway.base
    )
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the venv's `taskgate`

    done = subprocess.run(
        ["bash", "-ec", example],
        capture_output=True,
        text=True,
        env=environment(TOKEN=fleet.api.admin, PATH=path),
        timeout=90,
    )

    assert done.returncode == 0, done.stderr
    assert "100% COMPLETED" in done.stderr
    assert re.search(rf"^{re.escape(fleet.server_ids[0])} +", done.stdout, re.M), done.stdout

"""`taskgate mock-backend` as a real process: the backend protocol it speaks, and the test hooks
(`/_stats`, `/_control`, `/_reset`) other end-to-end tests and benchmarks rely on.

Async callbacks go to a small HTTP receiver in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.support.waiting import eventually

from .harness import _free_port, unique

KEY = "mock-api-key"
DEFAULTS = {
    "mode": "sync",
    "delayMs": 0,
    "failRate": 0,
    "busyRate": 0,
    "failStatus": 500,
    "loseCallbackRate": 0,
    "progressSteps": 3,
    "healthy": True,
    "serverId": "srv-1",
    "stallRate": 0,
    "stallMs": 0,
}
T = TypeVar("T")


# -- the mock as a process ---------------------------------------------------------------


def start_mock(tmp: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port, log = _free_port(), tmp / "mock.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "mock-backend", "--port", str(port), *flags],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:  # /metrics, not /health: a mock may start unhealthy
        assert proc.poll() is None, f"mock-backend exited with {proc.returncode}:\n{log.read_text()}"
        try:
            return httpx.get(f"{base}/metrics", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    eventually(answers, timeout=20, what="mock-backend answering /metrics", interval=0.05)
    return proc, base, log


def stop_mock(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One mock for the module, with an API key; each test starts from DEFAULTS and zero stats."""
    flags = ["--api-key", KEY, "--server-id", "srv-1", "--name", "mock-a", "--progress-steps", "3"]
    proc, base, _ = start_mock(tmp_path_factory.mktemp("mock"), *flags, "--seed", "7")
    try:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=base, headers=headers, timeout=10.0) as client:
            yield client
    finally:
        stop_mock(proc)


@pytest.fixture
def mock(backend: httpx.Client) -> httpx.Client:
    assert backend.post("/_control", json=DEFAULTS).status_code == 200
    assert backend.post("/_reset").status_code == 200
    return backend


def control(client: httpx.Client, **changes: Any) -> None:
    reply = client.post("/_control", json=changes)
    assert reply.status_code == 200, reply.text


def stats(client: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/_stats").json()
    return body


# -- the callback receiver ---------------------------------------------------------------


class Receiver:
    """Records every PUT. Paths under /reject/ answer 409; under /probe/ it first reads the
    mock's /metrics, to see what the mock counts while its callback is being delivered."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.probe_base = ""
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                call = {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                if self.path.startswith("/probe/"):
                    call["activeTasks"] = httpx.get(f"{receiver.probe_base}/metrics").json()["activeTasks"]
                with receiver.lock:
                    receiver.calls.append(call)
                self.send_response(409 if self.path.startswith("/reject/") else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [call for call in self.calls if call["path"] == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def task(task_id: str, callback_url: str | None = None) -> dict[str, Any]:
    """What taskgate POSTs to a backend's predict endpoint."""
    request = {
        "type": "text",
        "priority": 1,
        "payload": {"prompt": "hello", "n": 2},
        "capabilities": ["text"],
        "async": True,
    }
    return {
        "id": task_id,
        "task_id": task_id,
        **request,
        "request": request,
        "callback_url": callback_url,
        "callback_token": f"token-{task_id}",
        "timeout": 60_000,
    }


# -- predict ------------------------------------------------------------------------------


def test_sync_answers_the_result_after_the_delay(mock: httpx.Client) -> None:
    control(mock, delayMs=300)
    task_id = unique("task")
    started = time.monotonic()
    reply = mock.post("/predict", json=task(task_id))
    elapsed = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "status": "completed",
        "result": {"echo": {"prompt": "hello", "n": 2}, "server": "mock-a", "taskId": task_id},
    }
    assert 0.3 <= elapsed < 2.0
    seen = stats(mock)
    assert (seen["received"], seen["current"], seen["byTask"]) == (1, 0, {task_id: 1})
    assert seen["outcomes"] == {"ok": 1, "busy": 0, "failed": 0}


def test_async_accepts_then_reports_progress_and_the_result(mock: httpx.Client, receiver: Receiver) -> None:
    control(mock, mode="async", delayMs=400)
    task_id = unique("task")
    path = f"/cb/{task_id}"
    started = time.monotonic()
    reply = mock.post("/predict", json=task(task_id, receiver.url + path))
    assert (reply.status_code, reply.json()) == (202, {"status": "accepted"})
    assert time.monotonic() - started < 0.3
    assert mock.get("/metrics").json()["activeTasks"] == 1

    calls = eventually(lambda: receiver.received(path), lambda calls: len(calls) == 4)
    assert time.monotonic() - started >= 0.4
    assert {call["auth"] for call in calls} == {f"Bearer token-{task_id}"}
    *progress, final = [call["body"] for call in calls]
    assert [body["status"] for body in progress] == ["PROCESSING"] * 3
    values = [body["progress"] for body in progress]
    assert values == sorted(values) and len(set(values)) == 3 and values[0] > 0 and values[-1] < 100
    assert final == {
        "status": "COMPLETED",
        "result": {"echo": {"prompt": "hello", "n": 2}, "server": "mock-a", "taskId": task_id},
    }
    seen = eventually(lambda: stats(mock), lambda seen: len(seen["callbacks"]) == 4)
    assert seen["callbacks"][-1] == {"taskId": task_id, "status": "COMPLETED", "httpStatus": 200}
    assert (seen["current"], seen["maxConcurrency"]) == (0, 1)


def test_a_task_stops_counting_before_its_final_callback_is_sent(
    mock: httpx.Client, receiver: Receiver
) -> None:
    """taskgate frees the slot when the result arrives and may send the next task at once."""
    control(mock, mode="async", delayMs=50, progressSteps=0)
    receiver.probe_base = str(mock.base_url.join("/")).rstrip("/")
    task_id = unique("task")
    path = f"/probe/{task_id}"
    assert mock.post("/predict", json=task(task_id, receiver.url + path)).status_code == 202
    (call,) = eventually(lambda: receiver.received(path))
    assert (call["body"]["status"], call["activeTasks"]) == ("COMPLETED", 0)


def test_failures_busy_and_permanent_errors(mock: httpx.Client) -> None:
    control(mock, failRate=1)
    reply = mock.post("/predict", json=task(unique("task")))
    assert (reply.status_code, reply.json()["status"]) == (500, "error")
    control(mock, busyRate=1)  # busy is decided first
    assert mock.post("/predict", json=task(unique("task"))).status_code == 503
    control(mock, busyRate=0, failStatus=400)
    assert mock.post("/predict", json=task(unique("task"))).status_code == 400
    seen = stats(mock)
    assert seen["outcomes"] == {"ok": 0, "busy": 1, "failed": 2}
    assert (seen["received"], seen["current"], seen["maxConcurrency"]) == (3, 0, 1)


def test_the_api_key_is_enforced(mock: httpx.Client) -> None:
    url = str(mock.base_url.join("/predict"))
    assert httpx.post(url, json=task(unique("task"))).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(url, json=task(unique("task")), headers=wrong).status_code == 401
    assert mock.post("/predict", json=task(unique("task"))).status_code == 200
    assert httpx.post(str(mock.base_url.join("/cancel")), json={"id": "t"}).status_code == 401
    seen = stats(mock)
    assert (seen["received"], seen["cancelled"]) == (1, [])  # refused calls are not work


def test_health_reports_the_server_id_and_follows_control(mock: httpx.Client) -> None:
    reply = mock.get("/health")
    assert (reply.status_code, reply.json()) == (
        200,
        {"status": "healthy", "model": {"server_id": "srv-1", "name": "mock-a"}},
    )
    control(mock, serverId="srv-2")
    assert mock.get("/health").json()["model"]["server_id"] == "srv-2"
    control(mock, serverId=None)
    assert mock.get("/health").json()["model"] == {"name": "mock-a"}
    control(mock, healthy=False)
    reply = mock.get("/health")
    assert (reply.status_code, reply.json()) == (503, {"status": "unhealthy"})


# -- concurrency ---------------------------------------------------------------------------


def send_together(client: httpx.Client, bodies: list[dict[str, Any]]) -> list[int]:
    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=client.base_url, headers=client.headers, timeout=10) as c:
            replies = await asyncio.gather(*(c.post("/predict", json=body) for body in bodies))
        return [reply.status_code for reply in replies]

    return asyncio.run(go())


def test_max_concurrency_counts_parallel_sync_requests(mock: httpx.Client) -> None:
    control(mock, delayMs=200)
    started = time.monotonic()
    assert send_together(mock, [task(unique("task")) for _ in range(8)]) == [200] * 8
    assert time.monotonic() - started < 1.0  # served in parallel, not one by one
    seen = stats(mock)
    assert (seen["received"], seen["current"], seen["maxConcurrency"]) == (8, 0, 8)


def test_async_tasks_count_until_their_result_is_sent(mock: httpx.Client, receiver: Receiver) -> None:
    control(mock, mode="async", delayMs=300, progressSteps=0)
    ids = [unique("task") for _ in range(5)]
    bodies = [task(task_id, f"{receiver.url}/cb/{task_id}") for task_id in ids]
    assert send_together(mock, bodies) == [202] * 5
    assert mock.get("/metrics").json() == {"activeTasks": 5, "received": 5, "cpu": 0, "memory": 0, "gpu": 0}
    eventually(lambda: all(receiver.received(f"/cb/{task_id}") for task_id in ids))
    seen = stats(mock)
    assert (seen["current"], seen["maxConcurrency"]) == (0, 5)


# -- async edge cases ------------------------------------------------------------------------


def test_a_lost_callback_is_never_sent(mock: httpx.Client, receiver: Receiver) -> None:
    control(mock, mode="async", delayMs=100, progressSteps=1, loseCallbackRate=1)
    task_id = unique("task")
    path = f"/cb/{task_id}"
    assert mock.post("/predict", json=task(task_id, receiver.url + path)).status_code == 202
    # The mock counts a lost callback in place of sending it, as the job's last step, after its
    # progress callback was answered: once counted, nothing more can come from that job.
    seen = eventually(lambda: stats(mock), lambda seen: seen["lostCallbacks"] == 1)
    assert seen["current"] == 0
    assert [call["body"]["status"] for call in receiver.received(path)] == ["PROCESSING"]


def test_cancel_is_recorded_and_stops_the_work(mock: httpx.Client, receiver: Receiver) -> None:
    control(mock, mode="async", delayMs=2_000, progressSteps=1)
    task_id = unique("task")
    path = f"/cb/{task_id}"
    assert mock.post("/predict", json=task(task_id, receiver.url + path)).status_code == 202
    assert stats(mock)["current"] == 1
    assert mock.post("/cancel", json={"id": task_id}).status_code == 200
    seen = eventually(lambda: stats(mock), lambda seen: seen["current"] == 0)
    assert seen["cancelled"] == [task_id]
    assert receiver.received(path) == []


def test_callback_failures_are_recorded(mock: httpx.Client, receiver: Receiver) -> None:
    control(mock, mode="async", progressSteps=1)
    rejected, unreachable, invalid = unique("task"), unique("task"), unique("task")
    closed = f"http://127.0.0.1:{_free_port()}/cb"
    assert mock.post("/predict", json=task(rejected, f"{receiver.url}/reject/{rejected}")).status_code == 202
    assert mock.post("/predict", json=task(unreachable, closed)).status_code == 202
    assert mock.post("/predict", json=task(invalid, "http://[::1")).status_code == 202
    seen = eventually(lambda: stats(mock), lambda seen: len(seen["callbacks"]) == 6)
    by_task = {(c["taskId"], c["status"]): c["httpStatus"] for c in seen["callbacks"]}
    assert by_task == {
        (rejected, "PROCESSING"): 409,
        (rejected, "COMPLETED"): 409,
        (unreachable, "PROCESSING"): None,
        (unreachable, "COMPLETED"): None,
        (invalid, "PROCESSING"): None,
        (invalid, "COMPLETED"): None,
    }
    assert seen["current"] == 0
    assert mock.get("/health").status_code == 200


# -- test hooks ------------------------------------------------------------------------------


def test_control_rejects_unknown_keys_and_bad_values_and_changes_nothing(mock: httpx.Client) -> None:
    for changes in ({"delayMs": 1_000, "speed": 2}, {"mode": "later"}, {"failRate": 2}, {"healthy": "no"}):
        reply = mock.post("/_control", json=changes)
        assert (reply.status_code, reply.json()["status"]) == (400, "error"), changes
    started = time.monotonic()
    assert mock.post("/predict", json=task(unique("task"))).status_code == 200
    assert time.monotonic() - started < 0.5


def test_reset_zeroes_the_stats(mock: httpx.Client) -> None:
    control(mock, busyRate=1)
    mock.post("/predict", json=task(unique("task")))
    mock.post("/cancel", json={"task_id": "t-1"})
    assert mock.post("/_reset").status_code == 200
    assert stats(mock) == {
        "received": 0,
        "current": 0,
        "maxConcurrency": 0,
        "byTask": {},
        "callbacks": [],
        "cancelled": [],
        "outcomes": {"ok": 0, "busy": 0, "failed": 0},
        "lostCallbacks": 0,
        "stalled": 0,
    }


# -- command-line flags ----------------------------------------------------------------------


def test_command_line_flags(tmp_path: Path) -> None:
    flags = ["--mode", "async", "--fail-rate", "1", "--fail-status", "400", "--name", "other", "--unhealthy"]
    proc, base, log = start_mock(tmp_path, *flags)
    try:
        assert f"predict {base}/predict" in log.read_text()
        assert f"health {base}/health" in log.read_text()
        assert httpx.get(f"{base}/health").status_code == 503
        httpx.post(f"{base}/_control", json={"healthy": True})
        assert httpx.get(f"{base}/health").json() == {"status": "healthy", "model": {"name": "other"}}
        # no --api-key: any caller is served
        reply = httpx.post(f"{base}/predict", json=task(unique("task"), "http://127.0.0.1:9/cb"))
        assert (reply.status_code, reply.json()["status"]) == (400, "error")
    finally:
        stop_mock(proc)

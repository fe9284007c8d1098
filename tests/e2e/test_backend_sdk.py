"""The backend SDK end to end: backends written with it (docs/BACKENDS.md's example, run as
written, and tests/e2e/sdk_backend.py), each run as its own process by uvicorn, against a real
`taskgate serve`: tasks carried through progress, output and completion, a failing one, and
a cancelled one."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from taskgate.client import Client
from taskgate.models import Task, TaskStatus
from taskgate.streaming import DoneEvent, OutputEvent, StatusEvent
from tests.support.waiting import eventually

from .fleet import DEPLOYMENTS, Gateway, _stop, _wait_up, free_port, start_gateway
from .harness import unique

DOCS = Path(__file__).parents[2] / "docs" / "BACKENDS.md"


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Both deployments: on `dev --aws` a stream's response ends after a bounded wait and the
    client reads on with Last-Event-ID."""
    with start_gateway(tmp_path_factory.mktemp("sdk"), request.param, spares=0) as gateway:
        yield gateway


@pytest.fixture
def admin(gateway: Gateway) -> Iterator[Client]:
    with Client(gateway.base, gateway.api.admin) as client:
        yield client


@pytest.fixture
def user(gateway: Gateway) -> Iterator[Client]:
    with Client(gateway.base, gateway.api.user()) as client:
        yield client


@dataclass
class SdkBackend:
    server_id: str
    capability: str
    base: str

    def metrics(self) -> dict[str, int]:
        body: dict[str, int] = httpx.get(f"{self.base}/metrics", timeout=5).json()
        return body


@contextlib.contextmanager
def uvicorn_backend(
    admin: Client, tmp: Path, app: str, *, app_dir: Path, cancel: bool = False
) -> Iterator[SdkBackend]:
    """`uvicorn <app>` as its own process, registered under a fresh id and capability."""
    server_id, capability, port = unique("sdk"), unique("cap"), free_port()
    base, log = f"http://127.0.0.1:{port}", tmp / f"{server_id}.log"
    env = {**os.environ, "SDK_SERVER_ID": server_id}
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--app-dir", str(app_dir)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_up([(proc, base, log)])
        endpoints = {"predict": f"{base}/predict", "health": f"{base}/health", "metrics": f"{base}/metrics"}
        if cancel:
            endpoints["cancel"] = f"{base}/cancel"
        admin.register_server(server_id, endpoints, id=server_id, capabilities=[capability], max_concurrent=2)
        yield SdkBackend(server_id, capability, base)
    finally:
        with contextlib.suppress(Exception):
            admin.unregister_server(server_id)
        _stop(proc)
        assert "Traceback" not in log.read_text(), log.read_text()


def docs_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    found = [block for block in blocks if "create_app(handler)" in block]
    assert len(found) == 1, "docs/BACKENDS.md: expected one example backend"
    return found[0]


def test_the_docs_example_completes_a_task_and_fails_one(admin: Client, user: Client, tmp_path: Path) -> None:
    (tmp_path / "mybackend.py").write_text(docs_example())
    assert len(docs_example().strip().splitlines()) <= 14  # "about ten lines"
    with uvicorn_backend(admin, tmp_path, "mybackend:app", app_dir=tmp_path) as backend:
        created = user.create_task("words", {"text": "hello big world"}, capabilities=[backend.capability])
        done = user.wait(created.id, timeout=20)
        assert (done.status, done.result, done.server_id) == (
            TaskStatus.COMPLETED,
            {"words": 3},
            backend.server_id,
        )
        assert (done.progress, done.attempts) == (100, 1)
        # Every chunk emitted, in order, read back from the task's stream after the fact.
        assert list(user.output(created.id, timeout=10)) == ["hello", "big", "world"]
        assert [(a.attempt, a.server_id, a.outcome) for a in done.history or []] == [
            (1, backend.server_id, "completed")
        ]

        failing = user.create_task("words", {"text": "  "}, capabilities=[backend.capability])
        failed = user.wait(failing.id, timeout=20)
        assert failed.status is TaskStatus.FAILED and "nothing to say" in str(failed.error), failed
        assert failed.attempts == 1  # a handler's exception is the task's failure, not retried
        assert backend.metrics()["succeeded"] == 1 and backend.metrics()["failed"] == 1


def test_a_task_reports_progress_while_it_runs_then_completes(
    admin: Client, user: Client, tmp_path: Path
) -> None:
    here = Path(__file__).parents[2]
    with uvicorn_backend(admin, tmp_path, "tests.e2e.sdk_backend:app", app_dir=here) as backend:
        gate = tmp_path / "go"
        created = user.create_task("e2e-sdk", {"gate": str(gate)}, 4, capabilities=[backend.capability])

        running = eventually(
            lambda: user.get_task(created.id),
            lambda task: task.progress == 50,
            timeout=15,
            what="progress 50 reported",
        )
        assert (running.status, running.message, running.server_id) == (
            TaskStatus.PROCESSING,
            "halfway",
            backend.server_id,
        )
        assert backend.metrics()["activeTasks"] == 1
        events = user.stream(created.id, timeout=30)
        seen = [next(events), next(events)]  # the task now, then the chunk emitted so far
        assert isinstance(seen[0], StatusEvent) and seen[0].task.progress == 50
        assert seen[1] == OutputEvent(0, {"step": 1})
        gate.touch()  # the rest arrives while the stream is open

        rest = list(events)
        assert OutputEvent(1, {"step": 2}) in rest and isinstance(rest[-1], DoneEvent)
        done: Task = rest[-1].task
        assert done.status is TaskStatus.COMPLETED, done
        assert done.result == {"steps": 2, "type": "e2e-sdk", "priority": 4}
        eventually(backend.metrics, lambda m: m["activeTasks"] == 0, timeout=5, what="slot freed")


def test_a_handler_error_fails_the_task_and_a_cancel_stops_the_work(
    admin: Client, user: Client, tmp_path: Path
) -> None:
    here = Path(__file__).parents[2]
    with uvicorn_backend(admin, tmp_path, "tests.e2e.sdk_backend:app", app_dir=here, cancel=True) as backend:
        gate = tmp_path / "go"
        gate.touch()
        failing = user.create_task(
            "e2e-sdk", {"gate": str(gate), "fail": "model exploded"}, capabilities=[backend.capability]
        )
        failed = user.wait(failing.id, timeout=20)
        assert failed.status is TaskStatus.FAILED and "model exploded" in str(failed.error), failed

        held = tmp_path / "never"
        created = user.create_task("e2e-sdk", {"gate": str(held)}, capabilities=[backend.capability])
        eventually(lambda: user.get_task(created.id).progress, lambda p: p == 50, timeout=15, what="running")
        user.cancel_task(created.id)
        metrics = eventually(
            backend.metrics,
            lambda m: m["cancelled"] == 1 and m["activeTasks"] == 0,
            timeout=10,
            what="the backend stopped the cancelled task",
        )
        assert metrics["succeeded"] == 0 and metrics["failed"] == 1
        assert user.get_task(created.id).status is TaskStatus.CANCELLED


ECHO_BACKEND = """
from taskgate.backend import create_app


async def handler(job):
    for word in job.payload["prompt"].split():
        job.emit(word)
    return {"echo": job.payload}


app = create_app(handler)
"""


def test_the_documented_async_client_example_streams_a_tasks_output(
    gateway: Gateway, admin: Client, tmp_path: Path
) -> None:
    (tmp_path / "echo_backend.py").write_text(ECHO_BACKEND)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS.parent / "CLIENT.md").read_text(), re.S)
    (example,) = [block for block in blocks if block.startswith("import asyncio")]
    token = gateway.api.user()
    env = {**os.environ, "TASKGATE_URL": gateway.base, "TASKGATE_TOKEN": token}
    with uvicorn_backend(admin, tmp_path, "echo_backend:app", app_dir=tmp_path):
        done = subprocess.run(
            [sys.executable, "-c", example], capture_output=True, text=True, env=env, timeout=90
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["chunk hello", "COMPLETED ['completed']"]

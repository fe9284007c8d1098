"""The dispatcher against Lambda's clock, on moto, with a backend on loopback that answers when
the test says so.

GIVEN tasks created through the tasks Lambda and a server registered through the servers
Lambda, WHEN the dispatcher gets events/sqs-dispatch.json shaped batches with a context whose
remaining time is short (tools.moto_env.LambdaContext counts it down for real), THEN: a batch's
predict calls are made at once; a synchronous call that cannot answer in the time left is cut
at that time and recorded as a failed attempt saying why (the slot freed, the task retried or
FAILED), before the invocation would end; and records there is no time to start are handed
back as batch item failures, untouched.

The reserve and the minimum are scaled down (monkeypatched) so that the budgets are a second
or two, not a minute.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from core.aws import runtime
from core.domain.models import TaskStatus
from tests.integration.test_lambda_dispatch import (
    SECRET,
    create_task,
    lambda_module,
    sqs_event,
    task_message,
)
from tests.support.aws import lambda_account
from tools.moto_env import LambdaContext


class GatedBackend:
    """A synchronous backend on loopback: each predict waits for `gate` (or `barrier`, if
    set, for that many predicts to be in flight at once), then answers 200 with a result."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.barrier: threading.Barrier | None = None
        self.received: list[str] = []
        self.bodies: dict[str, dict[str, Any]] = {}
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # health
                self._reply(200, {"status": "ok"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                backend.received.append(body["task_id"])
                backend.bodies[body["task_id"]] = body
                if backend.barrier is not None:
                    try:
                        backend.barrier.wait(timeout=10)
                    except threading.BrokenBarrierError:
                        self._reply(500, {"error": "predicts were not made at once"})
                        return
                else:
                    backend.gate.wait(timeout=30)
                self._reply(200, {"result": {"taskId": body["task_id"]}})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the dispatcher gave up on this call: nobody is listening

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend() -> Iterator[GatedBackend]:
    started = GatedBackend()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, backend: GatedBackend) -> Iterator[SimpleNamespace]:
    monkeypatch.setattr(runtime, "SETTLE_RESERVE_S", 1.0)
    monkeypatch.setattr(runtime, "START_MIN_S", 1.5)
    with lambda_account(monkeypatch, JWT_SECRET=SECRET, MAX_ATTEMPTS="2") as account:
        from core.domain import auth
        from tests.integration.test_lambda_dispatch import http

        admin = auth.mint(SECRET, sub="root", roles=["admin"], ttl_s=300)
        body = {
            "id": "gated",
            "name": "gated",
            "endpoints": {"predict": f"{backend.base}/predict", "health": f"{backend.base}/health"},
            "maxConcurrent": 10,
            "capabilities": ["video", "image"],
        }
        http(lambda_module("servers"), "api-register-server.json", body, admin)
        yield account


def dispatch(event: dict[str, Any], remaining_s: float) -> tuple[list[str], float]:
    """The dispatcher with `remaining_s` left of its invocation: the failed message ids and
    how long the invocation took."""
    started = time.monotonic()
    response = lambda_module("dispatcher").handler(
        event, LambdaContext("taskgate-dispatcher", timeout_s=remaining_s)
    )  # type: ignore[arg-type]
    failed = sorted(item["itemIdentifier"] for item in response["batchItemFailures"])
    return failed, time.monotonic() - started


def test_the_predict_calls_of_a_batch_are_made_at_once(aws: SimpleNamespace, backend: GatedBackend) -> None:
    # GIVEN three tasks and a backend that answers none until all three calls are in flight
    tasks = [create_task() for _ in range(3)]
    backend.barrier = threading.Barrier(3)
    # WHEN one batch carries their three messages
    failed, _ = dispatch(sqs_event(*map(task_message, tasks)), remaining_s=29)
    # THEN all three were sent together and completed on their first attempt
    assert failed == []
    for task_id in tasks:
        task = aws.store.get_task(task_id)
        assert task is not None
        assert (task.status, task.attempts, task.result) == (TaskStatus.COMPLETED, 1, {"taskId": task_id})
    assert sorted(backend.received) == sorted(tasks)


@pytest.mark.parametrize(("max_attempts", "after"), [(2, TaskStatus.PENDING), (1, TaskStatus.FAILED)])
def test_a_sync_call_that_cannot_answer_in_the_time_left_is_a_failed_attempt_saying_why(
    aws: SimpleNamespace,
    backend: GatedBackend,
    monkeypatch: pytest.MonkeyPatch,
    max_attempts: int,
    after: TaskStatus,
) -> None:
    monkeypatch.setenv("MAX_ATTEMPTS", str(max_attempts))
    lambda_module("tasks")  # read MAX_ATTEMPTS afresh
    task_id = create_task()
    # WHEN the dispatcher has 3 s left and the backend does not answer
    failed, took = dispatch(sqs_event(task_message(task_id)), remaining_s=3.0)
    # THEN the invocation returned before Lambda would have ended it, the message handled
    assert failed == []
    assert 2.0 - 0.2 <= took < 3.0  # cut at 3 s less the 1 s reserve
    # AND the attempt is recorded as cut short by the invocation, the slot freed
    task = aws.store.get_task(task_id)
    assert task is not None
    assert (task.status, task.attempts) == (after, 1)
    assert task.error is not None and "the dispatcher's invocation had left" in task.error
    assert "asynchronous backend" in task.error
    server = aws.store.get_server("gated")
    assert server is not None and server.active_tasks == 0
    assert backend.received == [task_id]


def test_records_there_is_no_time_to_start_are_handed_back_untouched(
    aws: SimpleNamespace, backend: GatedBackend
) -> None:
    tasks = [create_task() for _ in range(2)]
    event = sqs_event(*map(task_message, tasks))
    # WHEN the invocation has less left than a message needs to start (1.5 s, scaled down)
    failed, _ = dispatch(event, remaining_s=1.2)
    # THEN every record comes back as a batch item failure, and nothing was claimed or sent
    assert failed == sorted(r["messageId"] for r in event["Records"])
    for task_id in tasks:
        task = aws.store.get_task(task_id)
        assert task is not None and (task.status, task.attempts) == (TaskStatus.PENDING, 0)
    server = aws.store.get_server("gated")
    assert server is not None and server.active_tasks == 0
    assert backend.received == []


def test_the_budget_counts_down_the_remaining_time_less_the_reserve() -> None:
    now = [100.0]
    budget = runtime.Budget(20_000, clock=lambda: now[0])
    assert budget.left_s() == pytest.approx(20 - runtime.SETTLE_RESERVE_S)
    assert budget.can_start()
    now[0] += 20 - runtime.START_MIN_S - 0.1
    assert budget.can_start()
    now[0] += 0.2
    assert not budget.can_start()
    now[0] += 100
    assert budget.left_s() == 0.0


def test_a_payload_in_the_bucket_reaches_the_backend_whole(
    aws: SimpleNamespace, backend: GatedBackend
) -> None:
    from core.aws.payloads import PAYLOAD_INLINE_LIMIT
    from core.domain import auth
    from tests.integration.test_lambda_dispatch import http
    from tests.support.aws import load_event

    payload = {"frames": "z" * (PAYLOAD_INLINE_LIMIT * 2)}
    body = json.loads(load_event("api-create-task.json")["body"])
    user = auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=300)
    task_id = http(lambda_module("tasks"), "api-create-task.json", {**body, "payload": payload}, user)["id"]
    backend.gate.set()
    # WHEN the dispatcher (a fresh container: no cached payload) gets a message without the
    # task (as after a requeue), so it reads the task, whose item holds the reference
    failed, _ = dispatch(sqs_event(task_message(task_id)), remaining_s=29)
    assert failed == []
    # THEN the backend got the payload itself, and the task completed
    assert backend.bodies[task_id]["payload"] == payload
    task = aws.store.get_task(task_id)
    assert task is not None and task.status is TaskStatus.COMPLETED and task.payload == payload

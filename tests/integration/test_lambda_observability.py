"""What the Lambda functions tell an operator: JSON log lines carrying the request and task
ids, CloudWatch embedded-metric-format metrics, and X-Ray tracing only when it is on.

GIVEN the Lambda entry points on moto (as in test_lambda_dispatch.py) and their log handler
writing to a buffer, WHEN they are invoked with events/ shapes, THEN every line they and core/
write is one JSON object with the request's ids, and the EMF blobs name the metrics of
core/ports/telemetry.py with plausible values.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core.domain import auth
from tests.integration.test_lambda_dispatch import (  # the same emulated account and backend
    SECRET,
    aws,
    backend,
    create_task,
    dispatch,
    lambda_context,
    lambda_module,
    register,
    sqs_event,
)
from tests.support.aws import load_event

__all__ = ["aws", "backend"]  # fixtures, used by name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The Powertools handler (shared by the `core` and `taskgate` loggers) writing here."""
    import handlers._lambda  # noqa: F401  (configures the loggers)

    buffer = io.StringIO()
    shared = logging.getLogger("taskgate").handlers
    previous = [handler.setStream(buffer) for handler in shared if isinstance(handler, logging.StreamHandler)]
    assert previous, "the Powertools logger has no stream handler"
    try:
        yield buffer
    finally:
        for handler, stream in zip(shared, previous, strict=False):
            if isinstance(handler, logging.StreamHandler) and stream is not None:
                handler.setStream(stream)


def parsed(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def emf(out: str) -> list[dict[str, Any]]:
    """The embedded-metric-format blobs among stdout's lines."""
    blobs = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    return blobs


def metric_values(blobs: list[dict[str, Any]], name: str) -> list[float]:
    found: list[float] = []
    for blob in blobs:
        names = {m["Name"] for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
        if name in names:
            value = blob[name]
            found.extend(value if isinstance(value, list) else [value])
    return found


def test_a_create_logs_json_lines_with_the_request_and_task_ids_and_counts_the_task(
    aws: SimpleNamespace, log_lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the tasks function and an API Gateway create event
    event = load_event("api-create-task.json", auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=60))
    context = lambda_context()
    # WHEN it is invoked
    response = lambda_module("tasks").handler(event, context)
    # THEN the task is created, its request line names the task and both request ids
    assert response["statusCode"] == 200
    task_id = json.loads(response["body"])["id"]
    lines = parsed(log_lines)
    (request,) = [line for line in lines if line["message"] == "request handled"]
    assert request["task_id"] == task_id
    assert request["function_request_id"] == context.aws_request_id
    assert request["correlation_id"] == event["requestContext"]["requestId"]
    assert request["status"] == 200 and request["route"] == "POST /api/task"
    assert request["level"] == "INFO" and request["service"] == "taskgate"
    # AND the invocation's metrics say one task was created, with a cold start or not
    blobs = emf(capsys.readouterr().out)
    assert metric_values(blobs, "TasksCreated") == [1.0]
    assert all(blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "taskgate" for blob in blobs)


def test_a_core_log_line_carries_the_same_keys(
    aws: SimpleNamespace, log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a queue that no longer exists (the create's enqueue fails; core logs it)
    monkeypatch.setenv("QUEUE_URL", aws.queue_url + "-gone")
    event = load_event("api-create-task.json", auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=60))
    context = lambda_context()
    # WHEN a task is created
    response = lambda_module("tasks").handler(event, context)
    # THEN the request still succeeds (the sweeper finds the task) and core's line is JSON
    # with the task id, the request ids and the logger's name
    assert response["statusCode"] == 200
    task_id = json.loads(response["body"])["id"]
    (failed,) = [line for line in parsed(log_lines) if line["message"].startswith("enqueue failed")]
    assert failed["name"] == "core.ports.queue"
    assert failed["level"] == "ERROR" and "exception" in failed
    assert failed["task_id"] == task_id
    assert failed["function_request_id"] == context.aws_request_id
    assert failed["correlation_id"] == event["requestContext"]["requestId"]


def test_a_task_route_logs_the_path_id_even_when_the_task_is_unknown(
    aws: SimpleNamespace, log_lines: io.StringIO
) -> None:
    event = load_event("api-get-task.json", auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=60))
    response = lambda_module("tasks").handler(event, lambda_context())
    assert response["statusCode"] == 404
    (request,) = [line for line in parsed(log_lines) if line["message"] == "request handled"]
    assert request["task_id"] == event["pathParameters"]["id"]
    assert request["status"] == 404


def test_the_next_request_does_not_inherit_the_previous_task_id(
    aws: SimpleNamespace, log_lines: io.StringIO
) -> None:
    user = auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=60)
    lambda_module("tasks").handler(load_event("api-create-task.json", user), lambda_context())
    servers = load_event("api-list-servers.json", auth.mint(SECRET, sub="root", roles=["admin"], ttl_s=60))
    lambda_module("servers").handler(servers, lambda_context())
    first, second = [line for line in parsed(log_lines) if line["message"] == "request handled"]
    assert "task_id" in first
    assert "task_id" not in second


def test_a_dispatch_logs_the_task_and_measures_queue_wait_and_the_predict_call(
    aws: SimpleNamespace, backend: Any, log_lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a registered backend and a task
    register(backend)
    task_id = create_task()
    capsys.readouterr()
    # WHEN the dispatcher gets its message
    assert dispatch(sqs_event(json.dumps({"taskId": task_id}))) == []
    # THEN its line names the task and the SQS message
    (handled,) = [line for line in parsed(log_lines) if line["message"] == "message handled"]
    assert handled["task_id"] == task_id
    assert handled["message_id"].endswith("059f36b4-87a3-44ab-83d2-661975830a7d")
    # AND the metrics have the time in the queue and the predict call's duration
    blobs = emf(capsys.readouterr().out)
    (waited,) = metric_values(blobs, "QueueWait")
    (called,) = metric_values(blobs, "DispatchLatency")
    assert 0 <= waited < 60_000
    assert 0 < called < 10_000


def test_a_completion_reported_by_the_backend_is_counted(
    aws: SimpleNamespace, backend: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    register(backend)
    task_id = create_task()
    assert dispatch(sqs_event(json.dumps({"taskId": task_id}))) == []
    task = aws.store.get_task(task_id)
    assert task is not None and task.status.value in ("PROCESSING", "COMPLETED")
    if task.status.value == "PROCESSING":  # an async backend reports by callback
        token = auth.mint_callback(SECRET, task, ttl_s=60)
        event = load_event("api-get-task.json", token)
        event["routeKey"] = event["requestContext"]["routeKey"] = "PUT /api/task/{id}"
        event["requestContext"]["http"]["method"] = "PUT"
        event["pathParameters"] = {"id": task_id}
        event["rawPath"] = event["requestContext"]["http"]["path"] = f"/api/task/{task_id}"
        event["body"] = json.dumps({"status": "COMPLETED", "result": {"ok": True}})
        assert lambda_module("tasks").handler(event, lambda_context())["statusCode"] == 200
    assert metric_values(emf(capsys.readouterr().out), "TasksCompleted") == [1.0]


TRACED = """
import json, sys
from tools.moto_env import LambdaContext
from tests.support.aws import load_event
import handlers.system as system
response = system.handler(load_event("api-health.json"), LambdaContext("taskgate-system"))
print(json.dumps({"status": response["statusCode"], "xray": "aws_xray_sdk" in sys.modules}))
"""


def run_system_function(env: dict[str, str]) -> dict[str, Any]:
    """The system function's /health, invoked once in a fresh interpreter (no AWS needed:
    /health answers 503 without a table)."""
    done = subprocess.run(
        [sys.executable, "-c", TRACED],
        cwd=ROOT,
        env={**os.environ, "JWT_SECRET": SECRET, "TABLE_NAME": "none", "QUEUE_URL": "none", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_tracing_off_never_imports_the_xray_sdk() -> None:
    found = run_system_function({"POWERTOOLS_TRACE_DISABLED": "true"})
    assert found["xray"] is False


def test_tracing_on_sends_the_invocation_to_the_xray_daemon() -> None:
    # GIVEN an X-Ray daemon stand-in on loopback and a Lambda-like environment with a trace id
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(10)
    port = daemon.getsockname()[1]
    try:
        found = run_system_function(
            {
                "POWERTOOLS_TRACE_DISABLED": "false",
                "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
                "AWS_LAMBDA_FUNCTION_NAME": "taskgate-system",
                "LAMBDA_TASK_ROOT": str(ROOT),
                "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        # WHEN the function has run, THEN the SDK was loaded and a subsegment for the handler
        # reached the daemon
        assert found["xray"] is True
        names = set()
        while not any(name.startswith("## ") for name in names):
            header, _, document = daemon.recv(65536).decode().partition("\n")
            assert json.loads(header) == {"format": "json", "version": 1}
            names.add(json.loads(document)["name"])
    finally:
        daemon.close()
    # the handler's subsegment, and boto3's calls (patched by the Tracer) as their own
    assert "dynamodb" in names

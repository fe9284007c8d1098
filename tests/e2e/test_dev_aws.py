"""`taskgate dev --aws` as a user runs it: the AWS code path (DynamoDB and SQS under moto, the
dispatcher Lambda fed SQS events, the sweeper Lambda schedule events) in one real process,
with real mock backends on loopback, spoken to over HTTP with the admin token it prints.

The dispatch suite (tests/e2e/test_dispatch*.py) runs every scenario against `dev --aws` as
well as `serve`; what is left here is what it does not do: start the command as a user does,
with no JWT_SECRET, and use the token it prints (test_dev_aws_stats.py shares this gateway).

The last tests drive `aws_dev.EventSourceMapping` in-process with a stand-in function, to pin
what it deletes and what SQS delivers again (a store failure is hard to cause from outside).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.waiting import eventually

from .fleet import CLI, Backend, Mock, _stop, free_port, start_backends
from .harness import RATE_LIMITS_OFF, _wait_healthy, unique

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"}
SETTINGS = {
    "MAX_ATTEMPTS": "2",
    "RETRY_BASE_DELAY": "50",
    "RETRY_MAX_DELAY": "200",
    **RATE_LIMITS_OFF,
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """`taskgate dev --aws` on a free port; a client carrying the admin token it printed."""
    tmp = tmp_path_factory.mktemp("dev-aws")
    port, log = free_port(), tmp / "dev.log"
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"} | SETTINGS
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, "dev", "--aws", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}", log)
        printed = log.read_text()
        assert "AWS code path: DynamoDB and SQS emulated by moto in-process" in printed, printed
        token = re.search(r"admin token \(7 days\): (\S+)", printed)
        assert token, printed
        headers = {"Authorization": f"Bearer {token.group(1)}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30.0) as client:
            yield client
    finally:
        _stop(proc, signal.SIGTERM)
        # uvicorn exits by re-raising the SIGTERM it handled; a crash would be another code
        assert proc.returncode in (0, -signal.SIGTERM), log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Backend]]:
    """Every backend the module needs, started at once (each test registers its own)."""
    mocks = {"sync": Mock("sync"), "failing": Mock("failing", fail_rate=1), "echo": Mock("echo")}
    started = start_backends(tmp_path_factory.mktemp("backends"), list(mocks.values()))
    try:
        yield dict(zip(mocks, started, strict=True))
    finally:
        for backend in started:
            _stop(backend.proc)


def register(gateway: httpx.Client, backend: Backend, capability: str | None = None) -> str:
    """POST /api/servers for `backend`, with a capability of its own; returns the capability."""
    capability = capability or unique("cap")
    body = {
        "id": backend.server_id,
        "name": backend.server_id,
        "endpoints": backend.endpoints,
        "capabilities": [capability],
    }
    reply = gateway.post("/api/servers", json=body)
    assert reply.status_code == 200, reply.text
    return capability


def submit(gateway: httpx.Client, capability: str, **fields: Any) -> dict[str, Any]:
    body = {"type": "dev-aws", "priority": 1, "payload": {"n": 1}, "capabilities": [capability], **fields}
    reply = gateway.post("/api/task", json=body)
    assert reply.status_code == 200, reply.text
    created: dict[str, Any] = reply.json()
    return created


def task(gateway: httpx.Client, task_id: str) -> dict[str, Any]:
    reply = gateway.get(f"/api/task/{task_id}")
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


def finished(gateway: httpx.Client, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
    return eventually(
        lambda: task(gateway, task_id),
        lambda t: t["status"] in TERMINAL,
        timeout=timeout,
        what=f"{task_id} finished",
    )


def test_sync_backend_completes_in_one_post(gateway: httpx.Client, backends: dict[str, Backend]) -> None:
    backend = backends["sync"]
    capability = register(gateway, backend)

    done = submit(gateway, capability, **{"async": False})

    assert (done["status"], done["attempts"], done["serverId"]) == ("COMPLETED", 1, backend.server_id)
    assert done["result"]["taskId"] == done["id"]
    assert backend.stats()["byTask"] == {done["id"]: 1}


def test_a_result_past_the_inline_limit_reads_back_whole(
    gateway: httpx.Client, backends: dict[str, Backend]
) -> None:
    # The mock echoes the payload: a 40 KiB one makes a result kept in the payload bucket.
    capability = register(gateway, backends["echo"])
    payload = {"frames": "p" * 40 * 1024}

    done = submit(gateway, capability, payload=payload, **{"async": False})

    assert done["status"] == "COMPLETED" and done["result"]["echo"] == payload
    assert task(gateway, done["id"])["result"]["echo"] == payload


# -- the event source mapping, in-process ----------------------------------------------------


@pytest.fixture
def moto_queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str, str, threading.Event]]:
    """A queue under moto (visibility 1 s, to a DLQ after 2 receives) and the `sent` event
    that `dev --aws` wakes its poller with: (client, queue URL, DLQ URL, sent)."""
    from moto import mock_aws

    from tools import aws_dev, moto_env

    for name, value in moto_env.FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with moto_env.one_request_at_a_time() as sent, mock_aws():
        import boto3

        sqs = boto3.client("sqs", region_name=aws_dev.REGION)
        dlq_url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn["QueueArn"], "maxReceiveCount": 2})
        url = sqs.create_queue(
            QueueName="tasks", Attributes={"VisibilityTimeout": "1", "RedrivePolicy": redrive}
        )["QueueUrl"]
        yield sqs, url, dlq_url, sent


def queue_depth(sqs: Any, url: str) -> int:
    """Messages in the queue, visible or received and not yet deleted (delayed ones aside)."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(found.get(name, "0")) for name in names)


def test_event_source_mapping_deletes_all_but_the_reported_failures(
    moto_queue: tuple[Any, str, str, threading.Event],
) -> None:
    from tools import aws_dev

    sqs, url, dlq_url, sent = moto_queue
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert context.get_remaining_time_in_millis() > 0 and context.aws_request_id
        seen.extend(event["Records"])
        failed = [r["messageId"] for r in event["Records"] if json.loads(r["body"]).get("fail")]
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

    for body in ({"taskId": "ok-1"}, {"taskId": "bad", "fail": True}, {"taskId": "ok-2"}):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    mapping = aws_dev.EventSourceMapping(
        sqs, url, "arn:aws:sqs:us-east-1:123456789012:tasks", sent, lambda: handler
    )
    stop = threading.Event()
    poller = threading.Thread(target=mapping.run, args=(stop,), daemon=True)
    poller.start()
    try:
        dead = eventually(
            lambda: sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", []),
            lambda messages: len(messages) > 0,
            timeout=10,
            what="the failing message in the DLQ",
        )
    finally:
        stop.set()
        poller.join(timeout=5)

    assert [json.loads(m["Body"])["taskId"] for m in dead] == ["bad"]
    received = [(json.loads(r["body"])["taskId"], r["attributes"]["ApproximateReceiveCount"]) for r in seen]
    assert sorted(received) == [("bad", "1"), ("bad", "2"), ("ok-1", "1"), ("ok-2", "1")]
    assert {(r["eventSource"], r["eventSourceARN"], r["awsRegion"]) for r in seen} == {
        ("aws:sqs", "arn:aws:sqs:us-east-1:123456789012:tasks", "us-east-1")
    }
    assert "Messages" not in sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)


def test_event_source_mapping_keeps_the_batch_of_a_failed_invocation(
    moto_queue: tuple[Any, str, str, threading.Event],
) -> None:
    from tools import aws_dev

    sqs, url, _, sent = moto_queue
    calls: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(len(event["Records"]))
        if len(calls) == 1:
            raise RuntimeError("the whole invocation failed")
        return {"batchItemFailures": []}

    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"taskId": "t"}))
    mapping = aws_dev.EventSourceMapping(
        sqs, url, "arn:aws:sqs:us-east-1:123456789012:tasks", sent, lambda: handler
    )
    stop = threading.Event()
    poller = threading.Thread(target=mapping.run, args=(stop,), daemon=True)
    poller.start()
    try:
        eventually(lambda: len(calls), lambda n: n >= 2, timeout=5, what="the batch delivered again")
        # Deleted this time: with no message left, visible or in flight, none can come again.
        eventually(lambda: queue_depth(sqs, url), lambda depth: depth == 0, timeout=5, what="the queue empty")
    finally:
        stop.set()
        poller.join(timeout=5)
    assert calls == [1, 1]

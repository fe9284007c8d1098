"""The AWS code path in one test process: DynamoDB and SQS under moto, the Context the
Lambdas build, the HTTP routes in-process, a recording backend on loopback, and fault
injection on the boto3 clients (a botocore `before-call` hook raising the ClientError that
DynamoDB or SQS would return after botocore's own retries gave up)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from starlette.testclient import TestClient

from core.aws import runtime as lambda_runtime
from core.aws.context import build_context
from core.aws.dynamodb import DynamoStore
from core.aws.sqs import SqsQueue
from core.services.context import Context
from handlers._http import create_app
from handlers.routes import ROUTES
from tests.e2e.fleet import Backend, Mock, _stop, start_backends
from tests.e2e.harness import RATE_LIMITS_OFF, SECRET, Api
from tests.support.aws import create_table
from tools.moto_env import FAKE_AWS_ENV, one_request_at_a_time

BUSY_CODES = ("ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError")


@dataclass
class Faults:
    """One-shot faults: the n-th call of an operation fails with a code, once."""

    armed: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    injected: list[tuple[str, str]] = field(default_factory=list)

    def arm(self, operation: str, nth: int, code: str) -> None:
        self.armed.setdefault(operation, []).append((self.calls.get(operation, 0) + nth, code))

    def clear(self) -> None:
        self.armed.clear()

    def hook(self, model: Any, **_: Any) -> None:
        operation = model.name
        self.calls[operation] = self.calls.get(operation, 0) + 1
        for due, code in self.armed.get(operation, []):
            if due == self.calls[operation]:
                self.armed[operation].remove((due, code))
                self.injected.append((operation, code))
                status = 500 if code == "InternalServerError" else 400
                error = {
                    "Error": {"Code": code, "Message": "injected"},
                    "ResponseMetadata": {"HTTPStatusCode": status},
                }
                raise ClientError(error, operation)  # type: ignore[arg-type]


@dataclass
class Stack:
    ctx: Context
    api: Api
    sqs: Any
    queue_url: str
    faults: Faults

    @property
    def store(self) -> DynamoStore:
        assert isinstance(self.ctx.store, DynamoStore)
        return self.ctx.store

    def messages(self) -> list[dict[str, Any]]:
        """Every message now visible on the dispatch queue (received and deleted)."""
        found: list[dict[str, Any]] = []
        while True:
            reply = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            batch = reply.get("Messages", [])
            if not batch:
                return found
            for message in batch:
                found.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def deliver(self, body: dict[str, Any]) -> BaseException | None:
        """What the dispatcher Lambda does with one record; the error it would report."""
        try:
            lambda_runtime.handle_message(self.ctx, body, lambda_runtime.shared_pool())
        except Exception as exc:
            return exc
        return None


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    for name, value in {**FAKE_AWS_ENV, **RATE_LIMITS_OFF, "JWT_SECRET": SECRET}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS"):
        monkeypatch.delenv(name, raising=False)
    with one_request_at_a_time(), mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        monkeypatch.setenv("TABLE_NAME", create_table(dynamodb))
        queue_url = sqs.create_queue(QueueName="taskgate-reliability")["QueueUrl"]
        monkeypatch.setenv("QUEUE_URL", queue_url)
        monkeypatch.setenv("TASK_TIMEOUT", "1000")
        ctx = build_context()
        assert isinstance(ctx.store, DynamoStore) and isinstance(ctx.queue, SqsQueue)
        faults = Faults()
        ctx.store._client.meta.events.register("before-call.dynamodb.*", faults.hook)
        ctx.queue.client.meta.events.register("before-call.sqs.*", faults.hook)
        with TestClient(create_app(ROUTES, ctx), raise_server_exceptions=False) as client:
            yield Stack(ctx, Api("dynamodb", client, ctx.store, SECRET), sqs, queue_url, faults)


@dataclass
class RecordingBackend:
    backend: Backend
    record_dir: Path


@pytest.fixture(scope="module")
def recording_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingBackend]:
    """One synchronous mock for the module that records every predict call; tests tell their
    tasks apart by id."""
    tmp = tmp_path_factory.mktemp("backend")
    record_dir = tmp / "records"
    record_dir.mkdir()
    (started,) = start_backends(tmp, [Mock("aws", mode="sync", delay_ms=20, record_dir=str(record_dir))])
    try:
        yield RecordingBackend(started, record_dir)
    finally:
        _stop(started.proc)


def register(stack: Stack, backend: Backend, max_concurrent: int = 10) -> None:
    body = {
        "id": backend.server_id,
        "name": backend.server_id,
        "endpoints": backend.endpoints,
        "maxConcurrent": max_concurrent,
    }
    stack.api.post("/api/servers", json=body, token=stack.api.admin).ok()
    # Registration asks for a health check through the queue: answer it, as the dispatcher would.
    for message in stack.messages():
        assert stack.deliver(message) is None

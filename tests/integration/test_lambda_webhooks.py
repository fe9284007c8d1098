"""The AWS path of Idempotency-Key and webhooks, on moto, with a real receiver on loopback.

GIVEN a table built from template.yaml and a queue, WHEN the tasks Lambda gets
events/api-create-task.json with an Idempotency-Key, the dispatcher Lambda the webhook message
the finish left on the queue, or the sweeper Lambda its schedule event, THEN the tasks, the
deliveries and what the receiver got are as the README says.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from core.aws.context import LazyContext
from core.domain import auth
from core.domain.models import DeliveryState
from core.domain.signing import verify
from tests.e2e.fleet import Backend, Mock, start_backends
from tests.e2e.webhook_receiver import Receiver, start_receiver
from tests.support.aws import lambda_account, load_event
from tools.moto_env import LambdaContext

SECRET = "lambda-webhook-secret-" * 3
WEBHOOK_SECRET = "lambda-receiver-secret"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    (started,) = start_backends(tmp_path_factory.mktemp("backends"), [Mock("hooks")])
    yield started
    started.proc.kill()
    started.proc.wait()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.proc.kill()
        receiver.proc.wait()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    with lambda_account(
        monkeypatch,
        JWT_SECRET=SECRET,
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        # Retries due at once, so two sweeps make two attempts.
        WEBHOOK_RETRY_BASE_DELAY="0",
        WEBHOOK_MAX_ATTEMPTS="3",
        # The receiver is on loopback, which a deployed stack refuses unless allowed.
        WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
    ) as account:
        yield account


def lambda_module(name: str) -> ModuleType:
    module = importlib.import_module(f"handlers.{name}")
    if isinstance(getattr(module, "context", None), LazyContext):
        module.context.reset()
    else:
        module.app.state.context = None
    return module


def create(body: dict[str, Any], sub: str = "alice", key: str | None = None) -> dict[str, Any]:
    """The tasks Lambda, fed events/api-create-task.json with `body` (and the key)."""
    event = load_event("api-create-task.json", auth.mint(SECRET, sub=sub, roles=["user"], ttl_s=300))
    event["body"] = json.dumps(body)
    event["headers"]["content-length"] = str(len(event["body"]))
    if key is not None:
        event["headers"]["idempotency-key"] = key
    response: dict[str, Any] = lambda_module("tasks").handler(
        event, LambdaContext("taskgate-test", timeout_s=29)
    )
    return response


def example(**fields: Any) -> dict[str, Any]:
    return {**json.loads(load_event("api-create-task.json")["body"]), **fields}


def queued(aws: SimpleNamespace) -> list[dict[str, Any]]:
    """Every message on the queue now (delays ignored: moto is told to show them)."""
    found: list[dict[str, Any]] = []
    while messages := aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10).get("Messages"):
        found += [json.loads(m["Body"]) for m in messages]
        for m in messages:
            aws.sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=m["ReceiptHandle"])
    return found


def dispatch(*bodies: dict[str, Any]) -> list[dict[str, str]]:
    event = load_event("sqs-dispatch.json")
    (template,) = event["Records"]
    event["Records"] = [
        {**template, "messageId": f"{n}-{template['messageId']}", "body": json.dumps(body)}
        for n, body in enumerate(bodies)
    ]
    response = lambda_module("dispatcher").handler(event, LambdaContext("taskgate-dispatch-test"))
    failures: list[dict[str, str]] = response["batchItemFailures"]
    return failures


def register(backend: Backend) -> None:
    admin = auth.mint(SECRET, sub="root", roles=["admin"], ttl_s=300)
    event = load_event("api-register-server.json", admin)
    event["body"] = json.dumps(
        {"id": backend.server_id, "name": "hooks", "endpoints": backend.endpoints, "capabilities": ["video"]}
    )
    event["headers"]["content-length"] = str(len(event["body"]))
    response = lambda_module("servers").handler(event, LambdaContext("taskgate-test"))
    assert response["statusCode"] == 200, response["body"]


# -- Idempotency-Key -----------------------------------------------------------------------


def test_the_same_key_and_body_return_the_first_task(aws: SimpleNamespace) -> None:
    first = create(example(), key="order-7")
    again = create(example(), key="order-7")
    assert first["statusCode"] == again["statusCode"] == 200
    created, replayed = json.loads(first["body"]), json.loads(again["body"])
    assert replayed["id"] == created["id"] and set(replayed) == {"id", "status", "createdAt", "updatedAt"}
    assert (
        again["headers"].get("idempotent-replayed") == "true"
        and "idempotent-replayed" not in first["headers"]
    )
    assert [t.id for t in aws.store.tasks_by_owner("alice")] == [created["id"]]
    assert [m["taskId"] for m in queued(aws) if "taskId" in m] == [created["id"]]


def test_the_same_key_with_another_body_is_409_and_another_user_is_not_affected(aws: SimpleNamespace) -> None:
    first = json.loads(create(example(), key="order-8")["body"])
    conflict = create(example(priority=7), key="order-8")
    assert conflict["statusCode"] == 409
    body = json.loads(conflict["body"])
    assert body["error"] == "Conflict" and "Idempotency-Key" in body["details"]
    bob = create(example(priority=7), sub="bob", key="order-8")
    assert bob["statusCode"] == 200 and json.loads(bob["body"])["id"] != first["id"]
    assert len(aws.store.tasks_by_owner("alice")) == 1


@pytest.mark.parametrize("key", ["", "k" * 256, "bad\u0001key"])
def test_an_unusable_key_is_400_and_creates_nothing(aws: SimpleNamespace, key: str) -> None:
    reply = create(example(), key=key)
    assert reply["statusCode"] == 400
    assert "Idempotency-Key" in json.loads(reply["body"])["details"]
    assert aws.store.tasks_by_owner("alice") == []


# -- webhooks ------------------------------------------------------------------------------


@pytest.mark.parametrize("large", [False, True], ids=["small", "large-result-in-the-bucket"])
def test_the_dispatcher_delivers_the_webhook_message_a_finish_leaves(
    aws: SimpleNamespace, backend: Backend, receivers: list[Receiver], tmp_path: Path, large: bool
) -> None:
    # GIVEN a task with a webhook, completed inline by the backend through the dispatcher (which
    # echoes the payload: a 40 KiB one makes a result kept in the bucket, and a webhook body
    # read from the task when it is sent)
    receiver = start_receiver(tmp_path)
    receivers.append(receiver)
    register(backend)
    fields: dict[str, Any] = {"webhook": receiver.url}
    if large:
        fields["payload"] = {"frames": "p" * 40 * 1024}
    task_id = json.loads(create(example(**fields))["body"])["id"]
    assert dispatch(*[m for m in queued(aws) if "taskId" in m]) == []
    hints = [m for m in queued(aws) if "webhook" in m]
    assert hints == [{"webhook": {"taskId": task_id, "round": 0}}]

    # WHEN the dispatcher gets that message
    assert dispatch(*hints) == []

    # THEN the receiver got the finished task, signed, and the delivery says so
    (request,) = receiver.wait_requests(1)
    task = aws.store.get_task(task_id)
    assert task is not None and json.loads(request["body"]) == task.to_api()
    assert (task.result["echo"] == fields["payload"]) if large else task.result is not None
    headers = request["headers"]
    assert verify(
        WEBHOOK_SECRET,
        headers["x-taskgate-timestamp"],
        request["body"].encode(),
        headers["x-taskgate-signature"],
        time.time(),
    )
    (delivery,) = aws.store.deliveries_of_task(task_id)
    assert delivery.state is DeliveryState.DELIVERED and [a.status_code for a in delivery.log] == [200]
    assert (delivery.body == "") is large  # a large body is not kept on the delivery
    # A duplicate message sends nothing more. The dispatcher is synchronous and the receiver
    # logs a request before it answers: any POST of this call is in the log when it returns.
    assert dispatch(*hints) == []
    assert len(receiver.requests()) == 1
    assert aws.store.deliveries_of_task(task_id) == [delivery]


def test_the_sweeper_retries_a_failed_delivery(
    aws: SimpleNamespace, backend: Backend, receivers: list[Receiver], tmp_path: Path
) -> None:
    # GIVEN a finished task whose webhook answers 500, then 200
    receiver = start_receiver(tmp_path, "500,200")
    receivers.append(receiver)
    register(backend)
    task_id = json.loads(create(example(webhook=receiver.url))["body"])["id"]
    assert dispatch(*[m for m in queued(aws) if "taskId" in m]) == []
    queued(aws)  # the hint is lost: the sweeper must find the delivery on its own

    # WHEN the sweeper runs twice
    sweeper = lambda_module("sweeper")
    reports = [
        sweeper.handler(load_event("schedule-sweep.json"), LambdaContext("taskgate-sweeper"))
        for _ in range(2)
    ]

    # THEN both attempts were made and recorded, the second delivered
    assert [r["webhooks_sent"] for r in reports] == [1, 1]
    assert [r["answered"] for r in receiver.wait_requests(2)] == [500, 200]
    (delivery,) = aws.store.deliveries_of_task(task_id)
    assert delivery.state is DeliveryState.DELIVERED
    assert [a.status_code for a in delivery.log] == [500, 200]
    assert delivery.log[0].next_retry_at is not None

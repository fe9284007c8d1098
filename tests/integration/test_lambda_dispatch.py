"""The AWS dispatch entry points on moto, calling real mock backends on loopback.

GIVEN a table built from template.yaml, a queue, and a task and server written through the
HTTP Lambdas (or the store), WHEN the dispatcher Lambda gets events/sqs-dispatch.json with its
body pointed at that task, or the sweeper Lambda gets events/schedule-sweep.json, THEN the
backend sees what docs/BACKENDS.md says it should, and the batch response names exactly the records
that failed.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from core.aws.context import LazyContext
from core.domain import auth
from core.domain.ids import new_task_id, now_ms
from core.domain.models import Task, TaskStatus
from tests.e2e.fleet import Backend, Mock, start_backends
from tests.support.aws import lambda_account, load_event
from tools.moto_env import LambdaContext

SECRET = "lambda-dispatch-secret-" * 3


def lambda_context() -> LambdaContext:
    return LambdaContext("taskgate-dispatch-test", timeout_s=29)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One sync mock for the module; tests tell their tasks apart by id."""
    (started,) = start_backends(tmp_path_factory.mktemp("backends"), [Mock("lambda")])
    try:
        yield started
    finally:
        started.proc.kill()
        started.proc.wait()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    with lambda_account(monkeypatch, JWT_SECRET=SECRET, MAX_ATTEMPTS="3") as account:
        yield account


def lambda_module(name: str) -> ModuleType:
    """A Lambda module with its cached Context dropped: each test has its own moto account."""
    module = importlib.import_module(f"handlers.{name}")
    if isinstance(getattr(module, "context", None), LazyContext):
        module.context.reset()  # the Lambda caches it per container
    else:
        module.app.state.context = None
    return module


def http(module: ModuleType, event_name: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    event = load_event(event_name)
    event["body"] = json.dumps(body)
    event["headers"]["authorization"] = f"Bearer {token}"
    event["headers"]["content-length"] = str(len(event["body"]))
    response = module.handler(event, lambda_context())
    assert response["statusCode"] == 200, response["body"]
    reply: dict[str, Any] = json.loads(response["body"])
    return reply


def create_task(priority: int = 1) -> str:
    """POST /api/task through the tasks Lambda (the example body, at `priority`)."""
    body = json.loads(load_event("api-create-task.json")["body"])
    user = auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=300)
    return str(
        http(lambda_module("tasks"), "api-create-task.json", {**body, "priority": priority}, user)["id"]
    )


def register(backend: Backend, max_concurrent: int = 10) -> None:
    """POST /api/servers through the servers Lambda, for the backend on loopback."""
    body = {
        "id": backend.server_id,
        "name": backend.server_id,
        "endpoints": backend.endpoints,
        "maxConcurrent": max_concurrent,
        "capabilities": ["video", "image"],
    }
    admin = auth.mint(SECRET, sub="root", roles=["admin"], ttl_s=300)
    assert (
        http(lambda_module("servers"), "api-register-server.json", body, admin)["serverId"]
        == backend.server_id
    )


def sqs_event(*bodies: str, batch: str = "a") -> dict[str, Any]:
    """events/sqs-dispatch.json with one record per body, each with its own messageId."""
    event = load_event("sqs-dispatch.json")
    (template,) = event["Records"]
    event["Records"] = []
    for n, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["messageId"] = f"{batch}{n}-{template['messageId']}"
        record["body"] = body
        event["Records"].append(record)
    return event


def dispatch(event: dict[str, Any]) -> list[dict[str, str]]:
    response = lambda_module("dispatcher").handler(event, lambda_context())
    failures: list[dict[str, str]] = response["batchItemFailures"]
    return failures


def status(aws: SimpleNamespace, task_id: str) -> TaskStatus | None:
    task = aws.store.get_task(task_id)
    return None if task is None else task.status


def task_message(task_id: str) -> str:
    return json.dumps({"taskId": task_id})


def test_a_task_delivered_six_times_is_sent_to_the_backend_once(
    aws: SimpleNamespace, backend: Backend
) -> None:
    register(backend)
    task_id = create_task()

    first = sqs_event(*[task_message(task_id)] * 3, batch="a")
    assert len({r["messageId"] for r in first["Records"]}) == 3
    assert dispatch(first) == []
    assert dispatch(sqs_event(*[task_message(task_id)] * 3, batch="b")) == []

    task = aws.store.get_task(task_id)
    assert task is not None
    assert (task.status, task.attempts, task.server_id) == (TaskStatus.COMPLETED, 1, backend.server_id)
    assert task.result["taskId"] == task_id
    assert backend.received(task_id) == 1
    server = aws.store.get_server(backend.server_id)
    assert server is not None and server.active_tasks == 0


def test_a_synchronous_answer_past_the_inline_limit_is_kept_in_the_bucket(
    aws: SimpleNamespace, backend: Backend
) -> None:
    # GIVEN a task with a 40 KiB payload, which the mock backend echoes in its answer
    register(backend)
    body = json.loads(load_event("api-create-task.json")["body"])
    user = auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=300)
    payload = {"frames": "p" * 40 * 1024}
    task_id = http(lambda_module("tasks"), "api-create-task.json", {**body, "payload": payload}, user)["id"]

    # WHEN the dispatcher sends it and gets the answer inline
    assert dispatch(sqs_event(task_message(task_id))) == []

    # THEN the result is in the bucket, the item keeping its key, and reads back whole
    key = {"PK": {"S": f"TASK#{task_id}"}, "SK": {"S": "TASK"}}
    item = aws.store.client.get_item(TableName=aws.table, Key=key, ConsistentRead=True)["Item"]
    assert "result" not in item and item["outcome_ref"]["S"].startswith(f"results/{task_id}/1-")
    task = aws.store.get_task(task_id)
    assert task is not None and task.status is TaskStatus.COMPLETED and task.result["echo"] == payload


def sent_messages(aws: SimpleNamespace) -> list[dict[str, Any]]:
    """The bodies waiting on the queue (received, so they are not seen twice)."""
    got = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in got]


def dispatch_counting(event: dict[str, Any]) -> tuple[list[dict[str, str]], list[tuple[str, bool]]]:
    """Dispatch in a fresh container, with (operation, names a task key) for each DynamoDB
    call its client made."""
    seen: list[tuple[str, bool]] = []

    def before_parameter_build(model: Any, params: dict[str, Any], **_: Any) -> None:
        keys = json.dumps(params.get("ExpressionAttributeValues", {})) + json.dumps(params.get("Key", {}))
        seen.append((model.name, "TASK#" in keys))

    module = lambda_module("dispatcher")
    module.context().store._client.meta.events.register(
        "before-parameter-build.dynamodb", before_parameter_build
    )
    failures: list[dict[str, str]] = module.handler(event, lambda_context())["batchItemFailures"]
    return failures, seen


def test_the_create_message_carries_the_task_and_dispatch_does_not_read_it(
    aws: SimpleNamespace, backend: Backend
) -> None:
    # GIVEN a task created through the tasks Lambda
    register(backend)
    task_id = create_task()
    (message,) = [m for m in sent_messages(aws) if "taskId" in m]
    # THEN its message carries the task as written
    assert message["taskId"] == task_id and message["task"]["id"] == task_id
    assert message["task"]["status"] == "PENDING"
    # WHEN the dispatcher gets it
    failures, calls = dispatch_counting(sqs_event(json.dumps(message)))
    assert failures == []
    # THEN the backend got it once, and the task was claimed without being read first
    assert backend.received(task_id) == 1
    assert status(aws, task_id) is TaskStatus.COMPLETED
    assert "TransactWriteItems" in [name for name, _ in calls]
    assert [name for name, task in calls if task and name in ("Query", "GetItem")] == []


def test_a_stale_snapshot_does_not_dispatch_a_cancelled_task(aws: SimpleNamespace, backend: Backend) -> None:
    # GIVEN a task's creation message, and the task cancelled before the message is handled
    register(backend)
    task_id = create_task()
    (message,) = [m for m in sent_messages(aws) if "taskId" in m]
    task = aws.store.get_task(task_id)
    aws.store.update_task(
        task_id, {"status": TaskStatus.CANCELLED, "updated_at": now_ms()}, from_status={TaskStatus.PENDING}
    )
    # WHEN the message, whose snapshot still says PENDING, is handled
    assert dispatch(sqs_event(json.dumps(message))) == []
    # THEN the claim's condition refused it: nothing was sent, no slot taken
    assert task is not None and message["task"]["status"] == "PENDING"
    assert status(aws, task_id) is TaskStatus.CANCELLED
    assert backend.received(task_id) == 0
    server = aws.store.get_server(backend.server_id)
    assert server is not None and server.active_tasks == 0


@pytest.mark.parametrize(
    "snapshot",
    [{"id": "task_other", "status": "PENDING"}, {"status": 7}, "not an object", {"id": None}],
    ids=["another task", "wrong types", "not an object", "incomplete"],
)
def test_a_bad_snapshot_is_ignored_and_the_task_read(
    aws: SimpleNamespace, backend: Backend, snapshot: Any
) -> None:
    register(backend)
    task_id = create_task()
    assert dispatch(sqs_event(json.dumps({"taskId": task_id, "task": snapshot}))) == []
    assert backend.received(task_id) == 1
    assert status(aws, task_id) is TaskStatus.COMPLETED


def test_a_record_that_is_not_json_is_the_only_failure(aws: SimpleNamespace, backend: Backend) -> None:
    register(backend)
    task_id = create_task()
    event = sqs_event(task_message(task_id), "{not json", json.dumps({"taskId": new_task_id()}))
    bad = event["Records"][1]["messageId"]

    assert dispatch(event) == [{"itemIdentifier": bad}]
    task = aws.store.get_task(task_id)
    assert task is not None and task.status is TaskStatus.COMPLETED
    assert backend.received(task_id) == 1


def test_a_store_failure_fails_every_record(
    aws: SimpleNamespace, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(backend)
    task_id = create_task()
    monkeypatch.setenv("TABLE_NAME", "no-such-table")
    event = sqs_event(task_message(task_id), json.dumps({"drain": True}))

    try:
        failures = dispatch(event)
    except BatchProcessingError as exc:
        pytest.fail(
            f"the dispatcher raised instead of reporting every record in batchItemFailures: {exc.msg}"
        )
    # Records are handled at once: the failures come in the order they happened.
    assert sorted(f["itemIdentifier"] for f in failures) == sorted(r["messageId"] for r in event["Records"])
    assert backend.received(task_id) == 0


def test_a_drain_message_dispatches_pending_tasks_in_priority_order(
    aws: SimpleNamespace, backend: Backend
) -> None:
    register(backend, max_concurrent=1)
    by_priority = {priority: create_task(priority) for priority in (1, 9, 5, 3)}
    drain = json.dumps({"drain": True})

    assert dispatch(sqs_event(drain)) == []
    # one slot: the drain took the highest priority only
    assert {p: status(aws, t) for p, t in by_priority.items()} == {
        9: TaskStatus.COMPLETED,
        5: TaskStatus.PENDING,
        3: TaskStatus.PENDING,
        1: TaskStatus.PENDING,
    }
    for _ in range(3):
        assert dispatch(sqs_event(drain)) == []

    order = [t for t in backend.stats()["byTask"] if t in by_priority.values()]
    assert order == [by_priority[p] for p in (9, 5, 3, 1)]
    for task_id in by_priority.values():
        task = aws.store.get_task(task_id)
        assert task is not None and (task.status, task.attempts) == (TaskStatus.COMPLETED, 1)


def test_the_sweeper_times_out_an_overdue_task_and_checks_a_new_server(
    aws: SimpleNamespace, backend: Backend
) -> None:
    register(backend)
    # Started after the registration: a release spares a server registered after its task began.
    now = now_ms()
    overdue = Task(
        id=new_task_id(),
        owner="alice",
        type="video-processing",
        priority=1,
        payload={},
        attempt_limit=1,
        created_at=now - 5_000,
        updated_at=now - 5_000,
        queued_at=now - 5_000,
    )
    aws.store.put_task(overdue)
    changes = {
        "status": TaskStatus.PROCESSING,
        "server_id": backend.server_id,
        "attempts": 1,
        "started_at": now,
        "updated_at": now,
        "deadline": now,  # due already: the sweep's clock reads no earlier than this
    }
    aws.store.claim_task(overdue, changes)
    before = aws.store.get_server(backend.server_id)
    assert before is not None and before.last_check_at is None and before.active_tasks == 1

    report = lambda_module("sweeper").handler(load_event("schedule-sweep.json"), lambda_context())

    assert report["timed_out"] == 1
    task = aws.store.get_task(overdue.id)
    assert task is not None and task.status is TaskStatus.TIMEOUT
    assert "Timed out" in task.error
    server = aws.store.get_server(backend.server_id)
    assert server is not None
    assert server.active_tasks == 0
    assert server.last_check_at is not None and server.health_status == "healthy"

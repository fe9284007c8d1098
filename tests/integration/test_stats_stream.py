"""Statistics in AWS: counted by the stream consumer Lambda from the table's DynamoDB stream,
not by the requests.

GIVEN a table built from template.yaml (stream on) under moto and tasks taken through their
lives by the HTTP and dispatcher Lambdas, WHEN the stream's records (filtered by the template's
FilterCriteria, as the event source mapping does) are handed to handlers.stats_stream, THEN
/api/stats reads the counts a known sequence should give, and a batch delivered again is not
counted twice.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from core.domain import auth
from core.domain.models import TaskStatus
from core.services import stats
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
from tests.support.aws import load_event, load_template
from tools.moto_env import StreamReader, matches, stream_filters, streams_client

__all__ = ["aws", "backend"]  # fixtures, used by name


@pytest.fixture
def stream(aws: SimpleNamespace) -> StreamReader:
    table = boto3.client("dynamodb").describe_table(TableName=aws.store.table_name)["Table"]
    patterns = stream_filters(load_template(), "StatsStreamFunction")
    return StreamReader(streams_client(), table["LatestStreamArn"], patterns)


def count(records: list[dict[str, Any]]) -> dict[str, int]:
    result: dict[str, int] = lambda_module("stats_stream").handler({"Records": records}, lambda_context())
    return result


def task_stats() -> dict[str, Any]:
    event = load_event("api-get-task.json", auth.mint(SECRET, sub="root", roles=["admin"], ttl_s=60))
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /api/stats/tasks"
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/api/stats/tasks"
    event.pop("pathParameters", None)
    response = lambda_module("stats").handler(event, lambda_context())
    assert response["statusCode"] == 200, response["body"]
    found: dict[str, Any] = json.loads(response["body"])
    return found


def cancel(task_id: str) -> None:
    event = load_event("api-get-task.json", auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=60))
    event["routeKey"] = event["requestContext"]["routeKey"] = "POST /api/task/{id}/cancel"
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/api/task/{task_id}/cancel"
    event["requestContext"]["http"]["method"] = "POST"
    event["pathParameters"] = {"id": task_id}
    assert lambda_module("tasks").handler(event, lambda_context())["statusCode"] == 200


def test_the_stream_counts_what_the_requests_no_longer_count(
    aws: SimpleNamespace, backend: Any, stream: StreamReader
) -> None:
    # GIVEN three tasks: one completed by the backend, one cancelled while pending, one pending
    register(backend)
    done = create_task()
    # (a dispatch message starts every task that can go, so the other two come after it)
    assert dispatch(sqs_event(json.dumps({"taskId": done}))) == []
    assert aws.store.get_task(done).status is TaskStatus.COMPLETED
    cancelled, waiting = create_task(), create_task()
    cancel(cancelled)
    # WHEN nothing has read the stream yet, THEN nothing is counted
    before = task_stats()
    assert (before["totalTasks"], before["successfulTasks"], before["pendingTasks"]) == (0, 0, 1)
    # WHEN the stream's task changes reach the statistics function
    records = stream.read()
    assert records and all(r["dynamodb"]["Keys"]["SK"]["S"] == "TASK" for r in records)
    assert count(records) == {"records": len(records), "counted": len(records)}
    # THEN the day's figures are those of the sequence
    after = task_stats()
    assert (after["totalTasks"], after["successfulTasks"], after["failedTasks"]) == (3, 1, 0)
    assert after["pendingTasks"] == 1  # the backlog, read from the PENDING index
    assert [top["serverId"] for top in after["topServers"]] == [backend.server_id]
    # AND the hour's counters hold the cancellation too (the response has no field for it)
    task = aws.store.get_task(waiting)
    hour = aws.store.get_counters([stats.hour_key(task.created_at)])[stats.hour_key(task.created_at)]
    assert (hour["created"], hour["completed"], hour["cancelled"]) == (3, 1, 1)


def test_a_batch_delivered_again_is_counted_once(
    aws: SimpleNamespace, backend: Any, stream: StreamReader
) -> None:
    register(backend)
    task_id = create_task()
    assert dispatch(sqs_event(json.dumps({"taskId": task_id}))) == []
    records = stream.read()
    first = count(records)
    # WHEN Lambda retries the same batch (the first invocation timed out after writing)
    again = count(records)
    # THEN the second adds nothing
    assert first["counted"] == len(records) and again == {"records": len(records), "counted": 0}
    found = task_stats()
    assert (found["totalTasks"], found["successfulTasks"]) == (1, 1)


def test_the_template_filter_passes_task_writes_only(aws: SimpleNamespace, stream: StreamReader) -> None:
    # GIVEN a server registration and a task: both write the table
    backend_less = {
        "id": "gpu-filter",
        "name": "gpu-filter",
        "endpoints": {"predict": "http://127.0.0.1:9/predict", "health": "http://127.0.0.1:9/health"},
    }
    admin = auth.mint(SECRET, sub="root", roles=["admin"], ttl_s=60)
    event = load_event("api-register-server.json", admin)
    event["body"] = json.dumps(backend_less)
    assert lambda_module("servers").handler(event, lambda_context())["statusCode"] == 200
    create_task()
    # WHEN the stream is read through the template's filter
    passed = stream.read()
    # THEN only the task's INSERT passes (the server, counter and rate-limit items do not)
    assert [(r["eventName"], r["dynamodb"]["Keys"]["PK"]["S"][:5]) for r in passed] == [("INSERT", "TASK#")]


def test_the_sample_event_counts_one_completion() -> None:
    # GIVEN events/dynamodb-stream-stats.json: one MODIFY, PROCESSING -> COMPLETED on gpu-1
    event = load_event("dynamodb-stream-stats.json")
    (record,) = event["Records"]
    patterns = stream_filters(load_template(), "StatsStreamFunction")
    assert any(matches(p, record) for p in patterns)
    # WHEN its changes are read
    from core.aws import stream

    change = stream.task_change(record)
    # THEN it is the completion of that task on that server, in the hour it completed
    assert change is not None
    task, previous = change
    assert (task.status, previous, task.server_id) == (TaskStatus.COMPLETED, TaskStatus.PROCESSING, "gpu-1")
    found = stats.increments(task, previous)
    assert found[stats.hour_key(task.completed_at or 0)]["completed"] == 1
    assert any(key.startswith("server:") and key.endswith(":gpu-1") for key in found)


def test_a_record_that_is_not_a_task_is_skipped() -> None:
    from core.aws import stream

    removal = {"eventName": "REMOVE", "dynamodb": {"OldImage": {"PK": {"S": "TASK#t"}, "SK": {"S": "TASK"}}}}
    server = {
        "eventName": "MODIFY",
        "dynamodb": {"NewImage": {"PK": {"S": "SERVER#a"}, "SK": {"S": "SERVER"}}},
    }
    broken = {
        "eventID": "x",
        "eventName": "INSERT",
        "dynamodb": {"NewImage": {"PK": {"S": "TASK#t"}, "SK": {"S": "TASK"}}},
    }
    assert stream.task_change(removal) is None
    assert stream.task_change(server) is None
    assert stream.task_change(broken) is None  # no fields: logged, not counted


def test_a_task_whose_payload_is_in_the_bucket_is_counted_and_read_whole_by_who_needs_it() -> None:
    from core.aws.dynamodb.stream_records import task_change

    (record,) = load_event("dynamodb-stream-task.json")["Records"]
    image = dict(record["dynamodb"]["NewImage"])
    del image["payload"]
    image["payload_ref"] = {"S": "payloads/task_abc123.json"}
    record["dynamodb"]["NewImage"] = image
    change = task_change(record)
    assert change is not None
    assert change.task.id == "task_abc123" and change.task.payload == {}
    assert change.outcome_elsewhere  # the notifier reads the task whole before posting it

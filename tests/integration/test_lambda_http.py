"""The HTTP Lambda entry points, fed the API Gateway (HTTP API v2) events in events/, on moto.

GIVEN a table built from template.yaml and a queue, WHEN a handler is invoked with a real
event shape, THEN it answers in API Gateway's response format with the reference's body.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from core.domain import auth
from tests.support.aws import lambda_account, load_event
from tools.moto_env import LambdaContext

SECRET = "lambda-test-secret-" * 4


def lambda_context() -> LambdaContext:
    return LambdaContext("taskgate-test", timeout_s=29)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    with lambda_account(monkeypatch, JWT_SECRET=SECRET) as account:
        yield account


def handler_module(name: str) -> ModuleType:
    module = importlib.import_module(f"handlers.{name}")
    module.app.state.context = None  # each test has its own moto account: build anew
    return module


def invoke(module: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = module.handler(event, lambda_context())
    return response["statusCode"], json.loads(response["body"]), response["headers"]


def admin() -> str:
    return auth.mint(SECRET, sub="root", roles=["admin"], ttl_s=300)


def user(sub: str = "alice") -> str:
    return auth.mint(SECRET, sub=sub, roles=["user"], ttl_s=300)


def test_create_task_event_stores_the_task_and_enqueues_it(aws: SimpleNamespace) -> None:
    tasks = handler_module("tasks")
    status, body, headers = invoke(tasks, load_event("api-create-task.json", user()))
    assert status == 200, body
    assert set(body) == {"id", "status", "createdAt", "updatedAt"}
    assert body["status"] == "PENDING"
    assert headers["content-type"] == "application/json"
    messages = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10)["Messages"]
    (message,) = [json.loads(m["Body"]) for m in messages]
    # the task as written travels with it, so the dispatcher need not read it
    assert (message["taskId"], message["task"]["id"], message["task"]["status"]) == (
        body["id"],
        body["id"],
        "PENDING",
    )

    get = load_event("api-get-task.json", user())
    get["rawPath"] = get["requestContext"]["http"]["path"] = f"/api/task/{body['id']}"
    get["pathParameters"] = {"id": body["id"]}
    status, task, _ = invoke(tasks, get)
    assert status == 200
    assert task["id"] == body["id"]
    assert task["type"] == "video-processing"
    assert task["attempts"] == 0


def test_get_task_event_for_an_unknown_task_is_404(aws: SimpleNamespace) -> None:
    status, body, _ = invoke(handler_module("tasks"), load_event("api-get-task.json", user()))
    assert (status, body) == (404, {"error": "Not found", "details": "Task not found: task_abc123"})


def test_placeholder_token_in_the_event_is_401(aws: SimpleNamespace) -> None:
    status, body, headers = invoke(handler_module("tasks"), load_event("api-create-task.json"))
    assert status == 401
    assert body["error"] == "Unauthorized"
    assert "www-authenticate" in {k.lower() for k in headers}


def test_register_and_list_server_events(aws: SimpleNamespace) -> None:
    servers = handler_module("servers")
    status, body, _ = invoke(servers, load_event("api-register-server.json", admin()))
    assert status == 200, body
    assert body["message"] == "Server registered successfully"
    assert body["serverId"].startswith("server_")
    assert auth.verify(SECRET, f"Bearer {body['token']}").server_id == body["serverId"]

    status, listed, _ = invoke(servers, load_event("api-list-servers.json", admin()))
    assert status == 200
    assert [s["id"] for s in listed["servers"]] == [body["serverId"]]
    assert listed["servers"][0]["groups"] == ["production"]
    assert "server-api-key" not in json.dumps(listed)


def test_register_server_event_needs_admin(aws: SimpleNamespace) -> None:
    status, body, _ = invoke(handler_module("servers"), load_event("api-register-server.json", user()))
    assert (status, body) == (403, {"error": "Forbidden", "details": "Admin role required"})


def test_health_event_is_public(aws: SimpleNamespace) -> None:
    status, body, _ = invoke(handler_module("system"), load_event("api-health.json"))
    assert status == 200
    assert body["status"] == "healthy"


def test_health_event_reports_an_unreachable_store(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TABLE_NAME", "no-such-table")
    status, body, _ = invoke(handler_module("system"), load_event("api-health.json"))
    assert status == 503
    assert body["status"] == "unhealthy"


def test_unexpected_errors_are_a_generic_500_with_a_request_id(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = handler_module("tasks")
    monkeypatch.setenv("TABLE_NAME", "no-such-table")
    status, body, headers = invoke(tasks, load_event("api-get-task.json", user()))
    assert status == 500
    assert body == {"error": "Internal server error", "details": "An unexpected error occurred"}
    assert headers.get("x-request-id")


def test_list_tasks_event_lists_the_users_own_tasks(aws: SimpleNamespace) -> None:
    # GIVEN a task of alice and one of bob
    tasks = handler_module("tasks")
    _, mine, _ = invoke(tasks, load_event("api-create-task.json", user("alice")))
    invoke(tasks, load_event("api-create-task.json", user("bob")))

    # WHEN alice lists her PENDING tasks
    status, body, _ = invoke(tasks, load_event("api-list-tasks.json", user("alice")))

    # THEN only hers comes, as a summary, and there is no next page
    assert status == 200, body
    assert [t["id"] for t in body["tasks"]] == [mine["id"]]
    assert body["nextCursor"] is None and "payload" not in body["tasks"][0]


def test_dashboard_event_is_the_page_with_its_security_policy(aws: SimpleNamespace) -> None:
    response = handler_module("docs").handler(load_event("api-dashboard.json"), lambda_context())
    assert response["statusCode"] == 200
    headers = {name.lower(): value for name, value in response["headers"].items()}
    assert headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert not response["isBase64Encoded"]
    assert 'src="dashboard/assets/app.js"' in response["body"]


def test_stream_event_answers_in_one_piece_and_resumes_after_last_event_id(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.domain.ids import now_ms
    from core.domain.models import Endpoints, OutputChunk, Server, TaskStatus

    monkeypatch.setenv("STREAM_WAIT_S", "1")
    tasks = handler_module("tasks")
    # GIVEN a task running on a server, with three chunks of output
    status, created, _ = invoke(tasks, load_event("api-create-task.json", user()))
    assert status == 200
    task = aws.store.get_task(created["id"])
    now = now_ms()
    endpoints = Endpoints(predict="http://127.0.0.1:9/p", health="http://127.0.0.1:9/h")
    aws.store.put_server(Server(id="gpu-1", name="gpu-1", endpoints=endpoints, registered_at=now))
    changes = {"status": TaskStatus.PROCESSING, "server_id": "gpu-1", "attempts": 1, "started_at": now}
    task = aws.store.claim_task(task, changes | {"updated_at": now, "deadline": now + 60_000})
    for n in range(3):
        chunk = OutputChunk(
            task_id=task.id, index=n, data={"n": n}, attempt=1, created_at=now, expires_at=now // 1000 + 600
        )
        task = aws.store.append_output(task, chunk, 7)
    event = load_event("api-stream-task.json", user())  # its Last-Event-ID is 0
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/api/task/{task.id}/stream"
    event["pathParameters"] = {"id": task.id}

    # WHEN the stream is read while the task runs
    response = tasks.handler(event, lambda_context())

    # THEN one response carries the task and the chunks after 1, with a retry hint, and ends
    assert response["statusCode"] == 200 and not response.get("isBase64Encoded")
    assert response["headers"]["content-type"].startswith("text/event-stream")
    body = response["body"]
    assert body.startswith("retry: 1000\n\n") and "event: status" in body and "event: done" not in body
    assert [line for line in body.splitlines() if line.startswith("id: ")] == ["id: 1", "id: 2"]

    # WHEN the task completes and the reader reconnects after chunk 2
    aws.store.release_task(
        task, {"status": TaskStatus.COMPLETED, "result": {"ok": True}, "updated_at": now_ms()}
    )
    event["headers"]["last-event-id"] = "2"
    body = tasks.handler(event, lambda_context())["body"]

    # THEN it gets done at once, with nothing repeated
    assert "event: output" not in body and "event: done" in body and '"status":"COMPLETED"' in body


def test_on_aws_the_dashboard_is_told_the_websocket_api_and_its_policy_allows_it(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "wss://abc123.execute-api.us-east-1.amazonaws.com/prod"
    monkeypatch.setenv("WEBSOCKET_URL", url)
    response = handler_module("docs").handler(load_event("api-dashboard.json"), lambda_context())
    assert response["statusCode"] == 200
    headers = {name.lower(): value for name, value in response["headers"].items()}
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["connect-src"] == f"'self' {url}"
    assert policy["script-src"] == "'self'" and policy["default-src"] == "'none'"
    assert f'<meta name="taskgate-websocket" content="{url}">' in response["body"]


@pytest.mark.parametrize(
    "bad",
    [
        "https://abc123.execute-api.us-east-1.amazonaws.com/prod",  # not a WebSocket URL
        "wss://abc123.example.com/prod?token=x",  # a query would carry into every connection
        "wss://abc123.example.com/prod; script-src *",  # would widen the policy
        'wss://abc123.example.com/"><script>',  # would break out of the page's attribute
        "wss:///prod",
    ],
)
def test_a_websocket_url_that_is_not_a_plain_wss_url_is_refused(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    from handlers import docs

    monkeypatch.setenv("WEBSOCKET_URL", bad)
    with pytest.raises(ValueError, match="WEBSOCKET_URL"):
        docs.websocket_url()


def test_without_a_websocket_url_the_page_uses_its_own_origin_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from handlers import docs

    monkeypatch.delenv("WEBSOCKET_URL", raising=False)
    page, headers = docs.dashboard_page(docs.websocket_url())
    assert b"taskgate-websocket" not in page
    assert "connect-src 'self';" in headers["Content-Security-Policy"]


def test_listing_reads_summaries_from_indexes_that_hold_no_payload(aws: SimpleNamespace) -> None:
    # GIVEN a task with a large payload, created through the tasks Lambda
    tasks = handler_module("tasks")
    event = load_event("api-create-task.json", user("alice"))
    body = json.loads(event["body"])
    body["payload"] = {"blob": "x" * 60_000}
    event["body"] = json.dumps(body)
    event["headers"]["content-length"] = str(len(event["body"]))
    status, created, _ = invoke(tasks, event)
    assert status == 200, created
    # THEN the listing indexes hold its summary, not its payload
    for index, key, value in (("ByOwner", "GSI1PK", "OWNER#alice"), ("ByRecent", "GSI4PK", "RECENT#PENDING")):
        (entry,) = aws.store.client.query(
            TableName=aws.table,
            IndexName=index,
            KeyConditionExpression=f"{key} = :v",
            ExpressionAttributeValues={":v": {"S": value}},
        )["Items"]
        assert "payload" not in entry and entry["id"] == {"S": created["id"]}, index
    # AND listing (by owner, and by status for an admin) answers from them
    status, mine, _ = invoke(tasks, load_event("api-list-tasks.json", user("alice")))
    assert status == 200 and [t["id"] for t in mine["tasks"]] == [created["id"]]
    assert mine["tasks"][0]["status"] == "PENDING" and "payload" not in mine["tasks"][0]
    # AND GET still returns the whole task
    got = load_event("api-get-task.json", user("alice"))
    got["pathParameters"] = {"id": created["id"]}
    got["rawPath"] = got["requestContext"]["http"]["path"] = f"/api/task/{created['id']}"
    status, whole, _ = invoke(tasks, got)
    assert status == 200 and whole["payload"] == {"blob": "x" * 60_000}


def test_a_large_payload_lives_in_the_bucket_and_get_reads_it_back(aws: SimpleNamespace) -> None:
    import boto3

    from core.aws.payloads import PAYLOAD_INLINE_LIMIT
    from tests.support.aws import TEST_PAYLOAD_BUCKET

    tasks = handler_module("tasks")
    small, large = {"n": "x" * 100}, {"blob": "y" * (PAYLOAD_INLINE_LIMIT + 1)}
    ids = {}
    for name, payload in (("small", small), ("large", large)):
        event = load_event("api-create-task.json", user("alice"))
        body = json.loads(event["body"])
        body["payload"] = payload
        event["body"] = json.dumps(body)
        event["headers"]["content-length"] = str(len(event["body"]))
        status, created, _ = invoke(tasks, event)
        assert status == 200, created
        ids[name] = created["id"]

    # THEN the large one's item holds a reference, not the payload, and is small; the small one
    # is as before
    def item(task_id: str) -> dict[str, Any]:
        key = {"PK": {"S": f"TASK#{task_id}"}, "SK": {"S": "TASK"}}
        found: dict[str, Any] = aws.store.client.get_item(TableName=aws.table, Key=key)["Item"]
        return found

    stored = item(ids["large"])
    assert "payload" not in stored and stored["payload_ref"] == {"S": f"payloads/{ids['large']}.json"}
    assert len(json.dumps(stored)) < 2048
    assert "payload_ref" not in item(ids["small"]) and "payload" in item(ids["small"])
    s3 = boto3.client("s3")
    body = s3.get_object(Bucket=TEST_PAYLOAD_BUCKET, Key=f"payloads/{ids['large']}.json")["Body"].read()
    assert json.loads(body) == large
    # AND GET returns both whole, from a cold container too (nothing cached)
    for name, payload in (("small", small), ("large", large)):
        handler_module("tasks")  # a fresh Context: no payload cache
        got = load_event("api-get-task.json", user("alice"))
        got["pathParameters"] = {"id": ids[name]}
        got["rawPath"] = got["requestContext"]["http"]["path"] = f"/api/task/{ids[name]}"
        status, whole, _ = invoke(handler_module("tasks"), got)
        assert status == 200 and whole["payload"] == payload, name


def test_a_payload_the_bucket_cannot_take_creates_no_task(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.aws.payloads import PAYLOAD_INLINE_LIMIT

    monkeypatch.setenv("PAYLOAD_BUCKET", "no-such-bucket-here")
    tasks = handler_module("tasks")
    event = load_event("api-create-task.json", user("alice"))
    body = json.loads(event["body"])
    body["payload"] = {"blob": "y" * (PAYLOAD_INLINE_LIMIT + 1)}
    event["body"] = json.dumps(body)
    event["headers"]["content-length"] = str(len(event["body"]))
    status, answer, _ = invoke(tasks, event)
    assert status == 503, answer
    assert aws.store.list_tasks(10).tasks == []  # nothing half-written


# -- large results: the callback (CallbacksFunction: handlers.tasks) and GET ---------------------


def running_task(aws: SimpleNamespace) -> tuple[str, str]:
    """A task of alice's PROCESSING on a server (attempt 1): its id and the server's."""
    from core.domain.ids import new_task_id, now_ms
    from core.domain.models import Endpoints, Server, Task, TaskStatus

    now = now_ms()
    endpoints = Endpoints(predict="http://gpu:8080/predict", health="http://gpu:8080/health")
    server = Server(id="gpu-1", name="gpu-1", endpoints=endpoints, registered_at=now - 1000)
    aws.store.put_server(server)
    task = Task(
        id=new_task_id(),
        owner="alice",
        type="t",
        priority=5,
        payload={},
        created_at=now,
        updated_at=now,
        queued_at=now,
    )
    aws.store.put_task(task)
    changes = {"status": TaskStatus.PROCESSING, "server_id": server.id, "attempts": 1, "started_at": now}
    aws.store.claim_task(task, changes)
    return task.id, server.id


def callback_event(task_id: str, body: str) -> dict[str, Any]:
    """`PUT /api/task/{id}` as API Gateway hands it to the callbacks function (the GET event's
    shape, method and route changed), from an admin (who may report on any task)."""
    event = load_event("api-get-task.json", admin())
    event["routeKey"] = event["requestContext"]["routeKey"] = "PUT /api/task/{id}"
    event["requestContext"]["http"]["method"] = "PUT"
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/api/task/{task_id}"
    event["pathParameters"] = {"id": task_id}
    event["headers"] |= {"content-type": "application/json", "content-length": str(len(body))}
    event["body"] = body
    return event


def get_task(task_id: str) -> dict[str, Any]:
    """GET /api/task/{id} from a fresh container (nothing cached)."""
    event = load_event("api-get-task.json", user("alice"))
    event["pathParameters"] = {"id": task_id}
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/api/task/{task_id}"
    status, task, _ = invoke(handler_module("tasks"), event)
    assert status == 200, task
    return task


def task_item(aws: SimpleNamespace, task_id: str) -> dict[str, Any]:
    key = {"PK": {"S": f"TASK#{task_id}"}, "SK": {"S": "TASK"}}
    found: dict[str, Any] = aws.store.client.get_item(TableName=aws.table, Key=key, ConsistentRead=True)[
        "Item"
    ]
    return found


@pytest.mark.parametrize("over", [False, True], ids=["at-limit", "over-limit"])
def test_a_result_at_and_past_the_inline_limit_round_trips_through_get(
    aws: SimpleNamespace, over: bool
) -> None:
    from core.aws.dynamodb.items import OUTCOME_INLINE_LIMIT

    # GIVEN a running task
    task_id, server_id = running_task(aws)
    result = "r" * (OUTCOME_INLINE_LIMIT - 2 + over)  # its JSON: the limit, or one byte more

    # WHEN its backend reports the result
    body = json.dumps({"status": "COMPLETED", "result": result})
    status, answer, _ = invoke(handler_module("tasks"), callback_event(task_id, body))

    # THEN the task is COMPLETED with the result in its item, or in the bucket past the limit
    assert status == 200 and answer["status"] == "COMPLETED", answer
    item = task_item(aws, task_id)
    assert ("result" in item, "outcome_ref" in item) == (not over, over)
    # AND GET returns it whole either way, the slot freed
    got = get_task(task_id)
    assert (got["status"], got["result"]) == ("COMPLETED", result)
    assert aws.store.get_server(server_id).active_tasks == 0


def test_a_result_over_the_maximum_fails_the_task_with_413(aws: SimpleNamespace) -> None:
    task_id, server_id = running_task(aws)
    body = json.dumps({"status": "COMPLETED", "result": "r" * (256 * 1024)})

    status, answer, _ = invoke(handler_module("tasks"), callback_event(task_id, body))

    assert status == 413, answer
    got = get_task(task_id)
    assert got["status"] == "FAILED" and got["result"] is None
    assert got["error"].startswith("Result too large") and "256 KiB" in got["error"]
    assert aws.store.get_server(server_id).active_tasks == 0  # the slot is free at once
    assert "outcome_ref" not in task_item(aws, task_id)  # nothing of it was stored


def test_a_result_the_bucket_cannot_take_is_503_and_the_task_unchanged(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.aws import TEST_PAYLOAD_BUCKET

    # GIVEN a running task, and a callbacks function whose bucket refuses the write
    task_id, server_id = running_task(aws)
    before = task_item(aws, task_id)
    body = json.dumps({"status": "COMPLETED", "result": {"frames": "r" * 40 * 1024}})
    monkeypatch.setenv("PAYLOAD_BUCKET", "no-such-bucket-here")

    # WHEN the backend reports a large result
    status, answer, _ = invoke(handler_module("tasks"), callback_event(task_id, body))

    # THEN it is told to retry, and the task is as it was: PROCESSING, its slot held
    assert status == 503, answer
    assert task_item(aws, task_id) == before
    assert aws.store.get_server(server_id).active_tasks == 1
    # AND its retry, once the bucket answers, completes the task
    monkeypatch.setenv("PAYLOAD_BUCKET", TEST_PAYLOAD_BUCKET)
    status, answer, _ = invoke(handler_module("tasks"), callback_event(task_id, body))
    assert status == 200, answer
    assert get_task(task_id)["result"] == {"frames": "r" * 40 * 1024}


def test_a_task_finished_with_an_outcome_item_by_an_earlier_version_still_reads(aws: SimpleNamespace) -> None:
    from core.aws.dynamodb.items import task_to_item
    from core.aws.dynamodb.keys import outcome_key
    from core.domain.ids import new_task_id, now_ms
    from core.domain.models import Task, TaskStatus

    # GIVEN a COMPLETED task as the previous version stored a 40 KiB result: in an OUTCOME item
    now = now_ms()
    task = Task(
        id=new_task_id(),
        owner="alice",
        type="t",
        priority=5,
        payload={},
        status=TaskStatus.COMPLETED,
        created_at=now,
        updated_at=now,
        queued_at=now,
        completed_at=now,
    )
    result = {"frames": "r" * 40 * 1024}
    client = aws.store.client
    client.put_item(TableName=aws.table, Item=task_to_item(task) | {"outcome_ref": {"BOOL": True}})
    client.put_item(TableName=aws.table, Item=outcome_key(task.id) | {"result": {"S": json.dumps(result)}})

    # WHEN it is read, THEN its result is there
    assert get_task(task.id)["result"] == result

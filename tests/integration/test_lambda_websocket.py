"""The AWS WebSocket entry points on moto: the WebSocket API's function and the notifier.

GIVEN a table built from template.yaml, WHEN the functions get API Gateway WebSocket events
from events/ (ws-connect.json, ws-subscribe.json, ws-disconnect.json) and stream events
(dynamodb-stream-task.json, its images taken from the table itself), THEN the connection and
subscription records are written and deleted as they should be, and what reached
post_to_connection (moto's @connections emulation records it) is exactly the messages of the
contract, in order. A connection that is gone (GoneException, from botocore's Stubber) is
cleaned up.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends
from moto.core import DEFAULT_ACCOUNT_ID

from core.aws import update_push
from core.aws.dynamodb import DynamoStore
from core.aws.dynamodb.connections import ConnectionStore
from core.aws.dynamodb.keys import chunk_key, connection_expiry_partition, task_key
from core.aws.payloads import PayloadBucket
from core.domain import auth
from core.domain.ids import new_task_id, now_ms
from core.domain.models import Endpoints, OutputChunk, Server, Task, TaskStatus
from handlers import notifier, sweeper, ws_api
from tests.support.aws import TEST_PAYLOAD_BUCKET, create_table, load_event
from tools.moto_env import LambdaContext

SECRET = "lambda-websocket-secret-" * 3
ENDPOINT = "https://wsapi123.execute-api.us-east-1.amazonaws.com/prod"
HOUR_MS = 3_600_000


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "JWT_SECRET": SECRET,
        "QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/unused",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WEBSOCKET_ENDPOINT", raising=False)
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        table = create_table(dynamodb)
        monkeypatch.setenv("TABLE_NAME", table)
        boto3.client("s3").create_bucket(Bucket=TEST_PAYLOAD_BUCKET)
        monkeypatch.setenv("PAYLOAD_BUCKET", TEST_PAYLOAD_BUCKET)
        for module in (ws_api, notifier, sweeper):
            module.push.reset()  # the Lambda caches it per container; each test has its own account
        yield SimpleNamespace(
            client=dynamodb,
            table=table,
            store=DynamoStore(
                table, client=dynamodb, payloads=PayloadBucket(TEST_PAYLOAD_BUCKET, client=boto3.client("s3"))
            ),
            connections=ConnectionStore(table, client=dynamodb),
        )
        apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].connections.clear()


def lambda_context() -> LambdaContext:
    return LambdaContext("taskgate-websocket-test", timeout_s=10)


def token(sub: str, role: str = "user", ttl_s: int = 600) -> str:
    return auth.mint(SECRET, sub=sub, roles=[role], ttl_s=ttl_s)


def connect(connection_id: str, token_value: str | None) -> dict[str, Any]:
    event = load_event("ws-connect.json")
    event["requestContext"]["connectionId"] = connection_id
    if token_value is None:
        event["queryStringParameters"] = None
        event.pop("multiValueQueryStringParameters")
    else:
        event["queryStringParameters"]["token"] = token_value
        event["multiValueQueryStringParameters"]["token"] = [token_value]
    answer: dict[str, Any] = ws_api.handler(event, lambda_context())
    return answer


def send(connection_id: str, body: str, route: str = "subscribe") -> None:
    event = load_event("ws-subscribe.json")
    event["requestContext"]["connectionId"] = connection_id
    event["requestContext"]["routeKey"] = route
    event["body"] = body
    assert ws_api.handler(event, lambda_context()) == {"statusCode": 200}


def subscribe(connection_id: str, task_id: str, kind: str = "subscribe") -> None:
    send(connection_id, json.dumps({"type": kind, "taskId": task_id}), kind)


def disconnect(connection_id: str) -> None:
    event = load_event("ws-disconnect.json")
    event["requestContext"]["connectionId"] = connection_id
    assert ws_api.handler(event, lambda_context()) == {"statusCode": 200}


def posted(connection_id: str) -> list[dict[str, Any]]:
    """What moto's @connections received for the connection, message by message."""
    backend = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    data = b"".join(c.data for cid, c in list(backend.connections.items()) if unquote(cid) == connection_id)
    decoder, text, messages, at = json.JSONDecoder(), data.decode(), [], 0
    while at < len(text):
        message, at = decoder.raw_decode(text, at)
        messages.append(message)
    return messages


def new_task(aws: SimpleNamespace, owner: str) -> Task:
    now = now_ms()
    task = Task(
        id=new_task_id(),
        owner=owner,
        type="video-processing",
        priority=1,
        payload={"video_url": "https://example.com/video.mp4"},
        created_at=now,
        updated_at=now,
        queued_at=now,
    )
    aws.store.put_task(task)
    return task


def start(aws: SimpleNamespace, task: Task) -> Task:
    """PENDING -> PROCESSING on a server of its own, as dispatch does."""
    now = now_ms()
    server_id = f"gpu-{task.id}"
    endpoints = Endpoints(predict="http://127.0.0.1:9/predict", health="http://127.0.0.1:9/health")
    aws.store.put_server(Server(id=server_id, name=server_id, endpoints=endpoints, registered_at=now))
    return aws.store.claim_task(
        task,
        {
            "status": TaskStatus.PROCESSING,
            "server_id": server_id,
            "attempts": task.attempts + 1,
            "started_at": now,
            "deadline": now + HOUR_MS,
            "updated_at": now,
        },
    )


def stream_event(aws: SimpleNamespace, *task_ids: str, event_name: str = "MODIFY") -> dict[str, Any]:
    """events/dynamodb-stream-task.json, one record per task id, each NewImage the task item
    as it is in the table now (what the stream would carry for the last write)."""
    sample = load_event("dynamodb-stream-task.json")
    (record,) = sample["Records"]
    records = []
    for n, task_id in enumerate(task_ids):
        item = aws.client.get_item(TableName=aws.table, Key=task_key(task_id))["Item"]
        copied = copy.deepcopy(record)
        copied["eventName"] = event_name
        copied["dynamodb"]["Keys"] = task_key(task_id)
        copied["dynamodb"]["NewImage"] = item
        copied["dynamodb"]["SequenceNumber"] = str(int(record["dynamodb"]["SequenceNumber"]) + n)
        records.append(copied)
    return {"Records": records}


def notify(event: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("WEBSOCKET_ENDPOINT", ENDPOINT)
    answer: dict[str, Any] = notifier.handler(event, lambda_context())
    return answer


def api_task(aws: SimpleNamespace, task_id: str) -> dict[str, Any]:
    task = aws.store.get_task(task_id)
    assert task is not None
    return task.to_api()


def pending_snapshot(aws: SimpleNamespace, task_id: str) -> dict[str, Any]:
    """What GET shows of a PENDING task on a table without servers: why it waits included, and
    its place under the scheduler's ordering (the only task of its owner queue: first)."""
    return {
        **api_task(aws, task_id),
        "queue": {"reason": "no_capable_server", "details": "no server is registered", "position": 1},
    }


def not_found(task_id: str) -> dict[str, Any]:
    return {"type": "error", "error": "Not found", "details": f"Task not found: {task_id}"}


# -- $connect / $disconnect ----------------------------------------------------------------


def test_connect_records_who_connected_until_the_two_hour_limit(aws: SimpleNamespace) -> None:
    # A token that outlives API Gateway's limit: the limit ends the record (a shorter one
    # ends it sooner: test_a_connection_ends_with_its_token).
    assert connect("conn-alice=", token("alice", ttl_s=86_400)) == {"statusCode": 200}
    connection = aws.connections.get_connection("conn-alice=")
    assert connection is not None
    assert (connection.sub, connection.roles, connection.tasks) == ("alice", ["user"], [])
    assert now_ms() // 1000 + 2 * 3600 <= connection.expires_at <= now_ms() // 1000 + 3 * 3600


@pytest.mark.parametrize(
    ("token_value", "details"),
    [
        (None, "Missing token: connect with ?token=<JWT>"),
        ("not-a-jwt", "Invalid or expired token"),
        ("expired", "Token expired"),
    ],
)
def test_connect_refuses_a_bad_token_with_401(
    aws: SimpleNamespace, token_value: str | None, details: str
) -> None:
    if token_value == "expired":
        token_value = token("alice", ttl_s=-60)
    answer = connect("conn-refused", token_value)
    assert answer["statusCode"] == 401
    assert json.loads(answer["body"]) == {"error": "Unauthorized", "details": details}
    assert aws.connections.get_connection("conn-refused") is None


def test_disconnect_deletes_the_connection_and_its_subscriptions(aws: SimpleNamespace) -> None:
    first, second = new_task(aws, "alice"), new_task(aws, "alice")
    connect("R2D2dcQ5oAMCJpA=", token("alice"))  # the id in ws-disconnect.json
    subscribe("R2D2dcQ5oAMCJpA=", first.id)
    subscribe("R2D2dcQ5oAMCJpA=", second.id)
    assert aws.connections.subscribers(first.id) == ["R2D2dcQ5oAMCJpA="]

    disconnect("R2D2dcQ5oAMCJpA=")

    assert aws.connections.get_connection("R2D2dcQ5oAMCJpA=") is None
    assert aws.connections.subscribers(first.id) == []
    assert aws.connections.subscribers(second.id) == []


# -- subscribe / unsubscribe / $default ----------------------------------------------------


def test_subscribe_posts_the_current_state_and_records_the_subscription(aws: SimpleNamespace) -> None:
    task = new_task(aws, "alice")
    connect("conn-1", token("alice"))
    subscribe("conn-1", task.id)
    assert posted("conn-1") == [{"type": "task", "task": pending_snapshot(aws, task.id)}]
    assert aws.connections.subscribers(task.id) == ["conn-1"]
    connection = aws.connections.get_connection("conn-1")
    assert connection is not None and connection.tasks == [task.id]


def test_the_sample_subscribe_event_for_an_unknown_task_is_not_found(aws: SimpleNamespace) -> None:
    connect("R2D2dcQ5oAMCJpA=", token("alice"))
    event = load_event("ws-subscribe.json")
    assert ws_api.handler(event, lambda_context()) == {"statusCode": 200}
    assert posted("R2D2dcQ5oAMCJpA=") == [not_found("task_abc123")]


def test_another_users_task_is_exactly_like_an_unknown_one(aws: SimpleNamespace) -> None:
    task = new_task(aws, "alice")
    connect("conn-bob", token("bob"))
    subscribe("conn-bob", task.id)
    subscribe("conn-bob", "task_doesnotexist")
    assert posted("conn-bob") == [not_found(task.id), not_found("task_doesnotexist")]
    assert aws.connections.subscribers(task.id) == []


def test_an_admin_may_follow_anyones_task(aws: SimpleNamespace) -> None:
    task = new_task(aws, "alice")
    connect("conn-admin", token("root", "admin"))
    subscribe("conn-admin", task.id)
    assert posted("conn-admin") == [{"type": "task", "task": pending_snapshot(aws, task.id)}]
    assert aws.connections.subscribers(task.id) == ["conn-admin"]


def test_a_finished_task_is_sent_once_and_not_followed(aws: SimpleNamespace) -> None:
    task = new_task(aws, "alice")
    aws.store.update_task(
        task.id,
        {"status": TaskStatus.CANCELLED, "completed_at": now_ms(), "updated_at": now_ms()},
        from_status={TaskStatus.PENDING},
    )
    connect("conn-1", token("alice"))
    subscribe("conn-1", task.id)
    assert [m["task"]["status"] for m in posted("conn-1")] == ["CANCELLED"]
    assert aws.connections.subscribers(task.id) == []


@pytest.mark.parametrize(
    ("body", "route", "details"),
    [
        ("hello", "$default", "Message is not valid JSON"),
        (
            '{"type": "watch", "taskId": "task_1"}',
            "$default",
            "Invalid value for field: type (use subscribe or unsubscribe)",
        ),
        ('{"type": "subscribe"}', "subscribe", "Missing required field: taskId"),
    ],
)
def test_a_bad_message_gets_a_bad_request_error(
    aws: SimpleNamespace, body: str, route: str, details: str
) -> None:
    connect("conn-1", token("alice"))
    send("conn-1", body, route)
    assert posted("conn-1") == [{"type": "error", "error": "Bad request", "details": details}]


def test_a_message_on_an_unknown_connection_is_unauthorized(aws: SimpleNamespace) -> None:
    task = new_task(aws, "alice")
    subscribe("conn-never-connected", task.id)
    assert posted("conn-never-connected") == [
        {"type": "error", "error": "Unauthorized", "details": "Connection is not registered: connect again"}
    ]
    assert aws.connections.subscribers(task.id) == []


def test_unsubscribe_ends_the_subscription(aws: SimpleNamespace) -> None:
    task = new_task(aws, "alice")
    connect("conn-1", token("alice"))
    subscribe("conn-1", task.id)
    subscribe("conn-1", task.id, "unsubscribe")
    assert aws.connections.subscribers(task.id) == []
    connection = aws.connections.get_connection("conn-1")
    assert connection is not None and connection.tasks == []


def test_a_connection_follows_a_bounded_number_of_tasks(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(update_push.updates, "MAX_SUBSCRIPTIONS", 2)
    tasks = [new_task(aws, "alice") for _ in range(3)]
    connect("conn-1", token("alice"))
    for task in tasks:
        subscribe("conn-1", task.id)
    subscribe("conn-1", tasks[0].id)  # again: not one more
    messages = posted("conn-1")
    assert [m["type"] for m in messages] == ["task", "task", "error", "task"]
    assert messages[2]["error"] == "Bad request"
    assert aws.connections.subscribers(tasks[2].id) == []


# -- the notifier --------------------------------------------------------------------------


def test_each_change_reaches_every_subscriber_in_order_and_a_finished_task_ends_it(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = new_task(aws, "alice")
    other = new_task(aws, "alice")
    connect("conn-a", token("alice"))
    connect("conn-b", token("root", "admin"))
    subscribe("conn-a", task.id)
    subscribe("conn-a", other.id)
    subscribe("conn-b", task.id)

    # WHEN the task is taken, reports 10 and 50, and completes, one stream batch per write
    running = start(aws, task)
    sent = [notify(stream_event(aws, task.id), monkeypatch)]
    for progress in (10, 50):
        aws.store.update_task(
            task.id,
            {"progress": progress, "updated_at": now_ms()},
            from_status={TaskStatus.PROCESSING},
            attempts=running.attempts,
        )
        sent.append(notify(stream_event(aws, task.id), monkeypatch))
    now = now_ms()
    aws.store.release_task(
        running,
        {
            "status": TaskStatus.COMPLETED,
            "progress": 100,
            "result": {"output_url": "https://example.com/processed.mp4"},
            "completed_at": now,
            "updated_at": now,
            "expires_at": now // 1000 + 86_400,
        },
    )
    sent.append(notify(stream_event(aws, task.id), monkeypatch))

    # THEN no record failed, both subscribers got every state in order, the last is GET's
    assert all(answer == {"batchItemFailures": []} for answer in sent), sent
    for connection_id in ("conn-a", "conn-b"):
        bodies = [m["task"] for m in posted(connection_id) if m["task"]["id"] == task.id]
        assert [(b["status"], b["progress"]) for b in bodies] == [
            ("PENDING", 0),
            ("PROCESSING", 0),
            ("PROCESSING", 10),
            ("PROCESSING", 50),
            ("COMPLETED", 100),
        ]
        assert bodies[-1] == api_task(aws, task.id)
    # and the finished task is followed no more; the other one still is
    assert aws.connections.subscribers(task.id) == []
    connection = aws.connections.get_connection("conn-a")
    assert connection is not None and connection.tasks == [other.id]


def test_a_gone_connection_is_deleted_and_the_others_still_get_the_change(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, other = new_task(aws, "alice"), new_task(aws, "alice")
    for connection_id in ("conn-gone", "conn-live"):
        connect(connection_id, token("alice"))
        subscribe(connection_id, task.id)
    subscribe("conn-gone", other.id)
    start(aws, task)
    event = stream_event(aws, task.id)

    client = update_push.management_client(ENDPOINT)
    with Stubber(client) as stub:
        for connection_id in aws.connections.subscribers(task.id):  # the order they are posted in
            params = {"ConnectionId": connection_id, "Data": ANY}
            if connection_id == "conn-gone":
                stub.add_client_error("post_to_connection", "GoneException", "", 410, expected_params=params)
            else:
                stub.add_response("post_to_connection", {}, expected_params=params)
        answer = notify(event, monkeypatch)
        stub.assert_no_pending_responses()

    assert answer == {"batchItemFailures": []}
    assert aws.connections.get_connection("conn-gone") is None
    assert aws.connections.subscribers(task.id) == ["conn-live"]
    assert aws.connections.subscribers(other.id) == []


def test_a_large_result_is_posted_whole(aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    task = new_task(aws, "alice")
    connect("conn-1", token("alice"))
    subscribe("conn-1", task.id)
    running = start(aws, task)
    now = now_ms()
    result = {"frames": ["x" * 1000] * 60}  # past the inline limit: kept in the payload bucket
    aws.store.release_task(
        running,
        {
            "status": TaskStatus.COMPLETED,
            "progress": 100,
            "result": result,
            "completed_at": now,
            "updated_at": now,
        },
    )
    image = aws.client.get_item(TableName=aws.table, Key=task_key(task.id))["Item"]
    assert "result" not in image and image["outcome_ref"]["S"].startswith(f"results/{task.id}/")
    assert notify(stream_event(aws, task.id), monkeypatch) == {"batchItemFailures": []}
    assert posted("conn-1")[-1]["task"]["result"] == result


def test_records_that_are_not_task_changes_post_nothing(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = new_task(aws, "alice")
    connect("conn-1", token("alice"))
    subscribe("conn-1", task.id)
    event = stream_event(aws, task.id, event_name="REMOVE")
    del event["Records"][0]["dynamodb"]["NewImage"]  # a TTL removal has only the old image
    assert notify(event, monkeypatch) == {"batchItemFailures": []}
    assert len(posted("conn-1")) == 1


def test_a_failing_record_is_reported_for_a_retry(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = new_task(aws, "alice")
    connect("conn-1", token("alice"))
    subscribe("conn-1", task.id)
    event = stream_event(aws, task.id)
    client = update_push.management_client(ENDPOINT)
    with Stubber(client) as stub:
        stub.add_client_error("post_to_connection", "LimitExceededException", "slow down", 429)
        answer = notify(event, monkeypatch)
    assert answer == {
        "batchItemFailures": [{"itemIdentifier": event["Records"][0]["dynamodb"]["SequenceNumber"]}]
    }
    assert aws.connections.subscribers(task.id) == ["conn-1"]  # kept: it was not gone


def test_records_after_a_failed_one_wait_for_its_retry(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a batch of three changes to two followed tasks, the first one's post failing
    first, second = new_task(aws, "alice"), new_task(aws, "alice")
    connect("conn-1", token("alice"))
    subscribe("conn-1", first.id)
    subscribe("conn-1", second.id)
    event = stream_event(aws, first.id, second.id, first.id)
    numbers = [record["dynamodb"]["SequenceNumber"] for record in event["Records"]]
    client = update_push.management_client(ENDPOINT)
    with Stubber(client) as stub:
        stub.add_client_error("post_to_connection", "LimitExceededException", "slow down", 429)
        stub.add_response("post_to_connection", {})
        stub.add_response("post_to_connection", {})
        answer = notify(event, monkeypatch)
        # THEN nothing after it was posted: the two answers ready for the others are unused
        with pytest.raises(AssertionError, match="2 responses remaining"):
            stub.assert_no_pending_responses()
    # and all three are reported, so Lambda retries them in order
    assert answer == {"batchItemFailures": [{"itemIdentifier": n} for n in numbers]}

    # WHEN the retry succeeds, every change arrives, in order
    before = len(posted("conn-1"))
    assert notify(event, monkeypatch) == {"batchItemFailures": []}
    assert [m["task"]["id"] for m in posted("conn-1")[before:]] == [first.id, second.id, first.id]


def test_each_output_chunk_is_posted_and_the_count_it_adds_to_the_task_is_not(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscriber on a running task
    task = new_task(aws, "alice")
    connect("conn-out", token("alice"))
    subscribe("conn-out", task.id)
    running = start(aws, task)

    # WHEN the backend's chunk is stored (a CHUNK# item, and the count on the task)
    now = now_ms()
    chunk = OutputChunk(
        task_id=task.id, index=0, data={"text": "hi"}, attempt=1, created_at=now, expires_at=now // 1000 + 60
    )
    aws.store.append_output(running, chunk, 13)
    sample = stream_event(aws, task.id)
    (task_record,) = sample["Records"]
    task_record["dynamodb"]["OldImage"] = {
        k: v
        for k, v in aws.client.get_item(TableName=aws.table, Key=task_key(task.id))["Item"].items()
        if k not in ("output_chunks", "output_bytes")
    } | {"output_chunks": {"N": "0"}, "output_bytes": {"N": "0"}}
    chunk_record = copy.deepcopy(task_record)
    chunk_record["eventName"] = "INSERT"
    chunk_record["dynamodb"]["Keys"] = chunk_key(task.id, 0)
    chunk_record["dynamodb"]["NewImage"] = aws.client.get_item(
        TableName=aws.table, Key=chunk_key(task.id, 0)
    )["Item"]
    del chunk_record["dynamodb"]["OldImage"]
    answer = notify({"Records": [task_record, chunk_record]}, monkeypatch)

    # THEN the subscriber got the chunk as an output message, and no task message for the count
    assert answer == {"batchItemFailures": []}
    messages = posted("conn-out")
    assert messages[-1] == {"type": "output", "taskId": task.id, "index": 0, "data": {"text": "hi"}}
    assert [m["type"] for m in messages] == ["task", "output"]


# -- counted costs: a task nobody follows costs the notifier nothing -------------------------


def test_a_subscribe_marks_the_task_followed_once(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = new_task(aws, "alice")
    item = aws.client.get_item(TableName=aws.table, Key=task_key(task.id))["Item"]
    assert "followed" not in item  # created unfollowed: the notifier's filter drops its changes
    connect("conn-1", token("alice"))
    connect("conn-2", token("alice"))
    subscribe("conn-1", task.id)
    followed = aws.client.get_item(TableName=aws.table, Key=task_key(task.id))["Item"]
    assert followed["followed"] == {"BOOL": True}
    assert {k: v for k, v in followed.items() if k != "followed"} == item  # nothing else changed
    # WHEN a second connection subscribes THEN the flag is not written again (its condition fails)
    writes = dynamodb_calls(monkeypatch)
    subscribe("conn-2", task.id)
    assert writes.count(("UpdateItem", "TASK")) == 1  # the one conditional attempt, refused
    assert aws.connections.subscribers(task.id) == ["conn-1", "conn-2"]


def test_an_expired_task_is_not_created_again_by_marking_it(aws: SimpleNamespace) -> None:
    task = new_task(aws, "alice")
    aws.client.delete_item(TableName=aws.table, Key=task_key(task.id))  # TTL took it meanwhile
    aws.connections.mark_followed(task.id)
    assert "Item" not in aws.client.get_item(TableName=aws.table, Key=task_key(task.id))


def test_the_notifier_reads_nothing_for_a_task_nobody_follows(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a change of a task no connection ever followed, delivered anyway (a filter-less
    # event source mapping: dev --aws, or the filter changed)
    task = new_task(aws, "alice")
    event = stream_event(aws, task.id)
    assert "followed" not in event["Records"][0]["dynamodb"]["NewImage"]
    calls = dynamodb_calls(monkeypatch)
    # WHEN the notifier gets it THEN it makes no DynamoDB call at all and reports no failure
    assert notify(event, monkeypatch) == {"batchItemFailures": []}
    assert calls == []


def test_the_notifier_filter_passes_changes_of_followed_tasks_only(aws: SimpleNamespace) -> None:
    from tests.integration.test_template import functions, matches

    (event_source,) = functions()["NotifierFunction"]["Events"].values()
    # The first filter: task changes (the second passes output chunks: test_template.py)
    first = event_source["Properties"]["FilterCriteria"]["Filters"][0]
    pattern = json.loads(first["Pattern"])
    task = new_task(aws, "alice")
    (unfollowed,) = stream_event(aws, task.id)["Records"]
    assert not matches(pattern, unfollowed)
    connect("conn-1", token("alice"))
    subscribe("conn-1", task.id)
    (followed,) = stream_event(aws, task.id)["Records"]
    assert matches(pattern, followed)
    # A creation cannot be followed yet: no INSERT is passed on.
    (created,) = stream_event(aws, task.id, event_name="INSERT")["Records"]
    assert not matches(pattern, created)


def dynamodb_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every DynamoDB call made from now on, by any client: (operation, SK of its key, if any)."""
    from botocore.client import BaseClient

    calls: list[tuple[str, str]] = []
    original = BaseClient._make_api_call

    def recording(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if self.meta.service_model.service_name == "dynamodb":
            calls.append((operation, params.get("Key", {}).get("SK", {}).get("S", "")))
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return calls


def test_a_connection_ends_with_its_token(aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Security review, finding 5, on the AWS path: the connection's records end at the token's
    exp; after it, a subscribe is refused and closes the connection, and an update closes a
    subscriber instead of reaching it. The clock is a fake one, moved past exp."""
    task = new_task(aws, "alice")
    short = token("alice", ttl_s=60)
    exp = auth.verify(SECRET, f"Bearer {short}").expires_s
    assert exp is not None
    for connection_id in ("conn-subscribes-late", "conn-follows"):
        assert connect(connection_id, short).get("statusCode", 200) == 200
    subscribe("conn-follows", task.id)
    stored = aws.connections.get_connection("conn-follows")
    assert stored is not None and stored.expires_at == exp  # not API Gateway's two hours
    before = len(posted("conn-follows"))

    after_exp = (exp + 1) * 1000
    for module in (ws_api, notifier):
        monkeypatch.setattr(module.push.context(), "clock", lambda: after_exp)
    # The @connections calls, stubbed: exactly these, in this order, and nothing else.
    client = update_push.management_client(
        update_push.endpoint(load_event("ws-subscribe.json")["requestContext"])
    )
    late = {"ConnectionId": "conn-subscribes-late"}
    with Stubber(client) as stub:
        stub.add_response("post_to_connection", {}, expected_params={**late, "Data": TOKEN_EXPIRED_MESSAGE})
        stub.add_response("delete_connection", {}, expected_params=late)
        subscribe("conn-subscribes-late", task.id)
        stub.assert_no_pending_responses()
    assert aws.connections.get_connection("conn-subscribes-late") is None

    start(aws, task)
    client = update_push.management_client(ENDPOINT)
    with Stubber(client) as stub:  # the update is not posted: the connection is closed
        stub.add_response("delete_connection", {}, expected_params={"ConnectionId": "conn-follows"})
        assert notify(stream_event(aws, task.id), monkeypatch) == {"batchItemFailures": []}
        stub.assert_no_pending_responses()
    assert len(posted("conn-follows")) == before
    assert aws.connections.get_connection("conn-follows") is None
    assert aws.connections.subscribers(task.id) == []


TOKEN_EXPIRED_MESSAGE = (
    b'{"type":"error","error":"Unauthorized","details":"Token expired: connect again with a new token"}'
)


# -- the sweeper closes silent connections at their token's expiry ---------------------------


def sweep_at(now_ms_: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The sweeper's handler on the schedule's event, its clock at `now_ms_`."""
    monkeypatch.setenv("WEBSOCKET_ENDPOINT", ENDPOINT)
    ctx = sweeper.context()
    monkeypatch.setattr(ctx, "clock", lambda: now_ms_)
    monkeypatch.setattr(ctx.queue, "capacity_changed", lambda: None)  # the tests' queue is not there
    report: dict[str, Any] = sweeper.handler(
        load_event("schedule-sweep.json"), LambdaContext("taskgate-sweeper-test", timeout_s=50)
    )
    return report


def expiry_items(aws: SimpleNamespace, *expiries_s: int) -> list[str]:
    """The sort keys of the expiry items in the hours of `expiries_s` (strongly consistent)."""
    found = []
    for hour in sorted({connection_expiry_partition(e) for e in expiries_s}):
        page = aws.client.query(
            TableName=aws.table,
            KeyConditionExpression="PK = :p",
            ExpressionAttributeValues={":p": {"S": hour}},
            ConsistentRead=True,
        )
        found += [item["SK"]["S"] for item in page["Items"]]
    return found


def test_a_silent_connection_is_closed_by_the_first_sweep_after_its_token_expires(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Security review, finding 5, for a connection that never speaks: nothing but the sweeper
    runs for it, and the first sweep at or after exp closes it (API Gateway's DeleteConnection)
    and deletes its records; one whose token lasts longer stays, and no sweep scans."""
    short, longer = token("alice", ttl_s=60), token("bob", ttl_s=600)
    exp = auth.verify(SECRET, f"Bearer {short}").expires_s
    assert exp is not None
    assert connect("conn-short", short) == {"statusCode": 200}
    assert connect("conn-longer", longer) == {"statusCode": 200}
    # A token outliving API Gateway's two hours needs no sweep: API Gateway ends it first.
    assert connect("conn-day", token("carol", ttl_s=86_400)) == {"statusCode": 200}
    task = new_task(aws, "alice")
    subscribe("conn-short", task.id)
    listed = [sk.split("#", 1)[1] for sk in expiry_items(aws, exp, exp + 540)]
    assert listed == ["conn-short", "conn-longer"]
    day = aws.connections.get_connection("conn-day")
    assert day is not None and expiry_items(aws, day.expires_at) == []
    calls = dynamodb_calls(monkeypatch)

    client = update_push.management_client(ENDPOINT)
    with Stubber(client) as stub:  # a second before exp: no @connections call at all
        assert sweep_at(exp * 1000 - 1, monkeypatch)["connections_closed"] == 0
        stub.add_response("delete_connection", {}, expected_params={"ConnectionId": "conn-short"})
        assert sweep_at(exp * 1000, monkeypatch)["connections_closed"] == 1
        stub.assert_no_pending_responses()
        assert sweep_at(exp * 1000 + 60_000, monkeypatch)["connections_closed"] == 0  # once only

    assert aws.connections.get_connection("conn-short") is None
    assert aws.connections.subscribers(task.id) == []
    assert not any(sk.endswith("#conn-short") for sk in expiry_items(aws, exp))
    assert aws.connections.get_connection("conn-longer") is not None
    assert aws.connections.get_connection("conn-day") is not None
    operations = {operation for operation, _ in calls}
    assert "Query" in operations and "Scan" not in operations


def test_a_connection_already_gone_is_cleaned_up_without_an_error(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """410 Gone from DeleteConnection (the client left, its $disconnect lost) is a close; so is
    an expiry item whose connection item TTL removed already."""
    short = token("alice", ttl_s=60)
    exp = auth.verify(SECRET, f"Bearer {short}").expires_s
    assert exp is not None
    for connection_id in ("conn-gone", "conn-ttl-removed"):
        connect(connection_id, short)
    aws.client.delete_item(
        TableName=aws.table, Key={"PK": {"S": "CONN#conn-ttl-removed"}, "SK": {"S": "CONN"}}
    )

    client = update_push.management_client(ENDPOINT)
    with Stubber(client) as stub:
        for connection_id in ("conn-gone", "conn-ttl-removed"):
            stub.add_client_error(
                "delete_connection", "GoneException", "", 410, expected_params={"ConnectionId": connection_id}
            )
        # Sweeps failed meanwhile for an hour and a half: the expiry's hour is still read.
        assert sweep_at((exp + 5400) * 1000, monkeypatch)["connections_closed"] == 2
        stub.assert_no_pending_responses()

    assert aws.connections.get_connection("conn-gone") is None
    assert expiry_items(aws, exp) == []


def test_a_close_api_gateway_refuses_is_retried_by_the_next_sweep(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = token("alice", ttl_s=60)
    exp = auth.verify(SECRET, f"Bearer {short}").expires_s
    assert exp is not None
    for connection_id in ("conn-a-throttled", "conn-b"):  # closed in this order (by expiry, then id)
        connect(connection_id, short)

    client = update_push.management_client(ENDPOINT)
    with Stubber(client) as stub:
        throttled = {"ConnectionId": "conn-a-throttled"}
        stub.add_client_error(
            "delete_connection", "LimitExceededException", "", 429, expected_params=throttled
        )
        stub.add_response("delete_connection", {}, expected_params={"ConnectionId": "conn-b"})
        # The refusal does not fail the sweep, nor keep the other connection open.
        assert sweep_at(exp * 1000, monkeypatch)["connections_closed"] == 1
        assert aws.connections.get_connection("conn-a-throttled") is not None
        stub.add_response("delete_connection", {}, expected_params=throttled)
        assert sweep_at(exp * 1000 + 60_000, monkeypatch)["connections_closed"] == 1
        stub.assert_no_pending_responses()
    assert expiry_items(aws, exp) == []


def test_a_disconnect_takes_the_expiry_item_with_it(aws: SimpleNamespace) -> None:
    short = token("alice", ttl_s=60)
    exp = auth.verify(SECRET, f"Bearer {short}").expires_s
    assert exp is not None
    connect("R2D2dcQ5oAMCJpA=", short)
    assert expiry_items(aws, exp) == [f"{exp:010d}#R2D2dcQ5oAMCJpA="]
    disconnect("R2D2dcQ5oAMCJpA=")
    assert expiry_items(aws, exp) == []

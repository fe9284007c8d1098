"""What is specific to the DynamoDB adapter, under moto: the index keys it maintains, the
requests it makes (one transaction per claim, never a Scan), and how DynamoDB's failures
become domain errors. The behaviour every Store shares is in tests/contract."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws

from core.aws.dynamodb import DynamoStore
from core.domain.models import Endpoints, Server, ServerStatus, Task, TaskStatus
from core.errors import NoCapacityError, StaleWriteError, UnavailableError
from core.ports.storage import IdempotencyRecord
from tests.support.aws import create_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

NOW = 1_700_000_000_000
HOUR = 3_600_000
EXPIRES_S = NOW // 1000 + 7 * 86_400
GSI_ATTRIBUTES = (
    "GSI1PK",
    "GSI1SK",
    "GSI2PK",
    "GSI2SK",
    "GSI3PK",
    "GSI3SK",
    "GSI4PK",
    "GSI4SK",
    "GSI5PK",
    "GSI5SK",
    "expiresAt",
)
_ids = itertools.count(1)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoDBClient]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def table(client: DynamoDBClient) -> str:
    return create_table(client)


@pytest.fixture
def store(client: DynamoDBClient, table: str) -> DynamoStore:
    return DynamoStore(table, client=client)


@pytest.fixture
def calls(client: DynamoDBClient, table: str) -> list[str]:
    """The DynamoDB operations the client sends from now on, in order."""
    sent: list[str] = []

    def record(model: Any, **_: Any) -> None:
        sent.append(model.name)

    client.meta.events.register("before-call.dynamodb.*", record)
    return sent


def fail(client: DynamoDBClient, operation: str, error: Callable[[], Exception], times: int = 99) -> None:
    """Make the next `times` calls of `operation` raise `error()` (as botocore would, after
    its own retries)."""
    remaining = [times]

    def raise_error(model: Any, **_: Any) -> None:
        if model.name == operation and remaining[0] > 0:
            remaining[0] -= 1
            raise error()

    client.meta.events.register("before-call.dynamodb.*", raise_error)


def client_error(code: str, operation: str, **extra: Any) -> Callable[[], ClientError]:
    response: Any = {"Error": {"Code": code, "Message": code}, **extra}
    return lambda: ClientError(response, operation)


def raw(client: DynamoDBClient, table: str, pk: str, sk: str) -> dict[str, Any]:
    """The stored item, attribute name -> plain value ({} if absent)."""
    item = client.get_item(TableName=table, Key={"PK": {"S": pk}, "SK": {"S": sk}}, ConsistentRead=True).get(
        "Item", {}
    )
    return {name: next(iter(value.values())) for name, value in item.items()}


def index_keys(client: DynamoDBClient, table: str, task_id: str) -> dict[str, Any]:
    item = raw(client, table, f"TASK#{task_id}", "TASK")
    return {name: item[name] for name in GSI_ATTRIBUTES if name in item}


def make_task(**overrides: Any) -> Task:
    fields: dict[str, Any] = {
        "id": f"task-{next(_ids)}",
        "owner": "alice",
        "type": "image.generate",
        "priority": 7,
        "payload": {"prompt": "a cat", "scale": 2.0},
        "created_at": NOW,
        "updated_at": NOW,
        "queued_at": NOW + 5,
    }
    return Task(**(fields | overrides))


def make_server(**overrides: Any) -> Server:
    server_id = overrides.pop("id", f"srv-{next(_ids)}")
    fields: dict[str, Any] = {
        "id": server_id,
        "name": server_id,
        "endpoints": Endpoints(predict="http://gpu:8080/predict", health="http://gpu:8080/health"),
        "registered_at": NOW,
    }
    return Server(**(fields | overrides))


def claim(store: DynamoStore, task: Task, server_id: str, deadline: int | None = NOW + HOUR) -> Task:
    changes = {
        "status": TaskStatus.PROCESSING,
        "server_id": server_id,
        "attempts": task.attempts + 1,
        "started_at": NOW + 10,
        "deadline": deadline,
    }
    return store.claim_task(task, changes)


COMPLETED = {
    "status": TaskStatus.COMPLETED,
    "result": {"ok": True},
    "completed_at": NOW + 50,
    "deadline": None,
    "expires_at": EXPIRES_S,
}


# -- the table ---------------------------------------------------------------------------


def test_the_table_is_built_from_the_template_with_its_indexes_ttl_and_stream(
    client: DynamoDBClient, table: str
) -> None:
    description = client.describe_table(TableName=table)["Table"]
    indexes = {i["IndexName"]: i for i in description.get("GlobalSecondaryIndexes", [])}
    assert sorted(indexes) == ["ByOwner", "ByQueue", "ByRecent", "ByServer", "ByStatus"]
    # The listing indexes carry summaries; ByQueue only keys (the scheduler reads the tasks it
    # picks from the table); the others whole tasks (dispatch reads payloads there).
    assert {name: i["Projection"]["ProjectionType"] for name, i in indexes.items()} == {
        "ByOwner": "INCLUDE",
        "ByQueue": "KEYS_ONLY",
        "ByRecent": "INCLUDE",
        "ByServer": "ALL",
        "ByStatus": "ALL",
    }
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert description["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expiresAt")


# -- index keys follow the task's state ---------------------------------------------------


def test_a_pending_task_is_in_the_owner_and_pending_indexes_only(
    store: DynamoStore, client: DynamoDBClient, table: str
) -> None:
    # GIVEN a PENDING task of priority 7 (it even carries a deadline and a server id)
    task = make_task(deadline=NOW, server_id="srv-stale", expires_at=EXPIRES_S)

    # WHEN it is stored
    store.put_task(task)

    # THEN it has the owner and PENDING keys, ordered by priority then queue time, and its
    # owner queue's (the scheduler's FIFO: capability set, priority, owner), and no more
    assert index_keys(client, table, task.id) == {
        "GSI1PK": "OWNER#alice",
        "GSI1SK": f"{NOW:013d}#{task.id}",
        "GSI2PK": "PENDING",
        "GSI2SK": f"03#{NOW + 5:013d}#{task.id}",
        "GSI4PK": "RECENT#PENDING",
        "GSI4SK": f"{NOW:013d}#{task.id}",
        "GSI5PK": "QUEUE##03#alice",
        "GSI5SK": f"{NOW + 5:013d}#{task.id}",
    }
    # AND its fields are stored as they are, expires_at included (only finished tasks expire)
    assert store.get_task(task.id) == task


def test_a_claimed_task_moves_to_the_processing_and_server_indexes(
    store: DynamoStore, client: DynamoDBClient, table: str
) -> None:
    # GIVEN a PENDING task and an online server
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)

    # WHEN it is claimed
    claim(store, task, server.id, deadline=NOW + HOUR)

    # THEN it is keyed by deadline under PROCESSING, and under its server
    keys = index_keys(client, table, task.id)
    assert keys["GSI2PK"] == "PROCESSING"
    assert keys["GSI2SK"] == f"{NOW + HOUR:013d}#{task.id}"
    assert (keys["GSI3PK"], keys["GSI3SK"]) == (f"SERVER#{server.id}", task.id)
    assert "expiresAt" not in keys


def test_a_processing_task_without_deadline_sorts_last_and_is_never_due(
    store: DynamoStore, client: DynamoDBClient, table: str
) -> None:
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)

    claim(store, task, server.id, deadline=None)

    assert index_keys(client, table, task.id)["GSI2SK"] == f"9999999999999#{task.id}"
    assert store.processing_due(NOW + 1000 * HOUR, 10) == []
    assert [t.id for t in store.processing_on_server(server.id)] == [task.id]


def test_a_finished_task_leaves_the_state_indexes_and_expires(
    store: DynamoStore, client: DynamoDBClient, table: str
) -> None:
    # GIVEN a task PROCESSING on a server
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)
    claimed = claim(store, task, server.id)

    # WHEN it completes with an expiry
    store.release_task(claimed, COMPLETED)

    # THEN only the owner index and its new status's listing keep it; TTL drops it at expires_at
    assert index_keys(client, table, task.id) == {
        "GSI1PK": "OWNER#alice",
        "GSI1SK": f"{NOW:013d}#{task.id}",
        "GSI4PK": "RECENT#COMPLETED",
        "GSI4SK": f"{NOW:013d}#{task.id}",
        "expiresAt": str(EXPIRES_S),
    }


def test_a_retried_task_rejoins_the_pending_index_and_stops_expiring(
    store: DynamoStore, client: DynamoDBClient, table: str, calls: list[str]
) -> None:
    # GIVEN a FAILED task that would expire
    task = make_task(status=TaskStatus.FAILED, expires_at=EXPIRES_S, attempts=3)
    store.put_task(task)
    assert "expiresAt" in index_keys(client, table, task.id)
    calls.clear()

    # WHEN it is retried (the changes do not repeat its priority)
    retry = {"status": TaskStatus.PENDING, "attempts": 0, "queued_at": NOW + 99}
    written = store.update_task(task.id, retry, from_status={TaskStatus.FAILED, TaskStatus.TIMEOUT})

    # THEN its priority was read (once), and it is queued under it, with no expiry, in one
    # transaction with its owner queue's count; what it returns is the task read before with
    # the changes, not a read after (which could already show the next writer's change)
    assert calls == ["Query", "TransactWriteItems"]
    assert written == store.get_task(task.id)
    assert (written.status, written.attempts, written.queued_at) == (TaskStatus.PENDING, 0, NOW + 99)
    assert index_keys(client, table, task.id) == {
        "GSI1PK": "OWNER#alice",
        "GSI1SK": f"{NOW:013d}#{task.id}",
        "GSI2PK": "PENDING",
        "GSI2SK": f"03#{NOW + 99:013d}#{task.id}",
        "GSI4PK": "RECENT#PENDING",
        "GSI4SK": f"{NOW:013d}#{task.id}",
        "GSI5PK": "QUEUE##03#alice",
        "GSI5SK": f"{NOW + 99:013d}#{task.id}",
    }
    assert [(q.priority, q.owner, q.pending) for q in store.owner_queues()] == [(7, "alice", 1)]
    assert [t.id for t in store.pending_queued_before(NOW + 99, 10)] == [task.id]


def test_a_progress_update_leaves_the_index_keys_alone_in_one_request(
    store: DynamoStore, client: DynamoDBClient, table: str, calls: list[str]
) -> None:
    # GIVEN a task PROCESSING on a server
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)
    claimed = claim(store, task, server.id)
    before = index_keys(client, table, task.id)
    calls.clear()

    # WHEN its backend reports progress
    store.update_task(
        task.id,
        {"status": TaskStatus.PROCESSING, "progress": 40},
        from_status={TaskStatus.PROCESSING},
        attempts=claimed.attempts,
        server_id=server.id,
    )

    # THEN one UpdateItem did it, and the keys are as they were
    assert calls == ["UpdateItem"]
    assert index_keys(client, table, task.id) == before


def test_a_field_read_for_the_index_keys_is_part_of_the_write_condition(
    store: DynamoStore, client: DynamoDBClient, table: str
) -> None:
    # GIVEN a PENDING task
    task = make_task()
    store.put_task(task)

    # AND another writer that cancels it just after the store has read it, before it writes
    other = boto3.client("dynamodb", region_name="us-east-1")

    def cancel_underneath(model: Any, **_: Any) -> None:
        if model.name == "UpdateItem":
            DynamoStore(table, client=other).update_task(
                task.id, {"status": TaskStatus.CANCELLED}, from_status={TaskStatus.PENDING}
            )

    client.meta.events.register("before-call.dynamodb.UpdateItem", cancel_underneath)

    # WHEN it is re-queued from PENDING or CANCELLED (so the store reads its status)
    with pytest.raises(StaleWriteError) as caught:
        store.update_task(
            task.id,
            {"queued_at": NOW + 500},
            from_status={TaskStatus.PENDING, TaskStatus.CANCELLED},
        )

    # THEN the write lost, and the cancelled task did not re-enter the PENDING index
    assert isinstance(caught.value.current, Task)
    assert caught.value.current.status is TaskStatus.CANCELLED
    assert "GSI2PK" not in index_keys(client, table, task.id)


# -- requests ------------------------------------------------------------------------------


def test_a_claim_is_one_transaction(store: DynamoStore, calls: list[str]) -> None:
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)
    calls.clear()

    claim(store, task, server.id)

    assert calls == ["TransactWriteItems"]


def test_no_method_scans(store: DynamoStore, calls: list[str]) -> None:
    # WHEN every method of the store is used
    server = make_server()
    store.put_server(server)
    store.get_server(server.id)
    store.list_servers()
    server = store.update_server(server.id, {"status": ServerStatus.ONLINE}, version=0)
    done, requeued, stays = (make_task(), make_task(), make_task(status=TaskStatus.FAILED))
    for task in (done, requeued, stays):
        store.put_task(task)
    store.get_task(done.id)
    store.release_task(claim(store, done, server.id), COMPLETED, server_counters={"success_count": 1})
    store.release_task(
        claim(store, requeued, server.id), {"status": TaskStatus.PENDING, "queued_at": NOW + 1}
    )
    store.update_task(stays.id, {"message": "x"}, from_status={TaskStatus.FAILED})
    store.tasks_by_owner("alice")
    store.pending_queued_before(NOW, 10)
    store.processing_due(NOW, 10)
    store.processing_on_server(server.id)
    store.set_active_tasks(server.id, 0, expected=0)
    store.put_setting("lb", {"algorithm": "p2c"})
    store.get_setting("lb")
    store.next_in_sequence("rr")
    store.add_counters("day#2024-05-01", {"completed": 1}, expires_at=EXPIRES_S)
    store.get_counters(["day#2024-05-01"])
    store.hit_rate_window("alice#create#1", expires_at=EXPIRES_S)
    store.put_idempotency(IdempotencyRecord("k", "h", done.id, EXPIRES_S), now_s=NOW // 1000)
    store.delete_server(server.id)

    # THEN none of them scanned the table
    assert calls and "Scan" not in calls


def test_counters_are_read_in_batches_of_100_and_unprocessed_keys_are_retried(
    store: DynamoStore, client: DynamoDBClient, table: str, calls: list[str]
) -> None:
    # GIVEN 150 counter buckets
    keys = [f"hour#{i}" for i in range(150)]
    for key in keys:
        store.add_counters(key, {"completed": 1}, expires_at=EXPIRES_S)
    calls.clear()

    # AND DynamoDB leaves the first request's keys unprocessed (as it does under load)
    first = [True]

    def unprocessed(model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if model.name != "BatchGetItem" or not first[0]:
            return None
        first[0] = False
        pending = [{"PK": {"S": f"COUNTER#{k}"}, "SK": {"S": "COUNTER"}} for k in keys[:100]]
        response = AWSResponse("https://dynamodb", 200, {}, None)  # type: ignore[arg-type]
        return response, {"Responses": {table: []}, "UnprocessedKeys": {table: {"Keys": pending}}}

    # A before-call handler that returns a response short-circuits the request.
    client.meta.events.register("before-call.dynamodb.BatchGetItem", cast("Any", unprocessed))

    # WHEN they are all read
    counters = store.get_counters(keys)

    # THEN every bucket came back, in 100-key requests plus the retry
    assert counters == {key: {"completed": 1} for key in keys}
    assert calls == ["BatchGetItem"] * 3


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"]
)
def test_throttling_is_unavailable(store: DynamoStore, client: DynamoDBClient, code: str) -> None:
    task = make_task()
    store.put_task(task)
    for operation in ("GetItem", "UpdateItem", "Query", "PutItem"):
        fail(client, operation, client_error(code, operation))

    with pytest.raises(UnavailableError) as caught:
        store.get_task(task.id)
    assert caught.value.details == "Storage is busy, retry shortly"
    with pytest.raises(UnavailableError):
        store.update_task(task.id, {"message": "x"}, from_status={TaskStatus.PENDING})
    with pytest.raises(UnavailableError):
        store.pending_queued_before(NOW, 10)
    with pytest.raises(UnavailableError):
        store.put_setting("lb", "random")


def test_a_read_timeout_is_unavailable(store: DynamoStore, client: DynamoDBClient) -> None:
    fail(client, "Query", lambda: ReadTimeoutError(endpoint_url="https://dynamodb"))

    with pytest.raises(UnavailableError):
        store.get_task("task-x")


def test_a_throttled_claim_is_unavailable_and_takes_no_slot(
    store: DynamoStore, client: DynamoDBClient
) -> None:
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)
    fail(
        client,
        "TransactWriteItems",
        client_error("ProvisionedThroughputExceededException", "TransactWriteItems"),
    )

    with pytest.raises(UnavailableError):
        claim(store, task, server.id)

    assert store.get_server(server.id) == server
    assert store.get_task(task.id) == task


def test_a_claim_retries_a_transaction_conflict(
    store: DynamoStore, client: DynamoDBClient, calls: list[str]
) -> None:
    # GIVEN a claim whose first two transactions collide with another transaction
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)
    conflict = client_error(
        "TransactionCanceledException",
        "TransactWriteItems",
        CancellationReasons=[{"Code": "None"}, {"Code": "TransactionConflict"}],
    )
    fail(client, "TransactWriteItems", conflict, times=2)
    calls.clear()

    # WHEN it is claimed
    claimed = claim(store, task, server.id)

    # THEN the third try won
    assert calls == ["TransactWriteItems"] * 3
    assert store.get_task(task.id) == claimed
    assert (store.get_server(server.id) or server).active_tasks == 1


def test_a_claim_that_keeps_conflicting_is_unavailable(store: DynamoStore, client: DynamoDBClient) -> None:
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)
    conflict = client_error(
        "TransactionCanceledException",
        "TransactWriteItems",
        CancellationReasons=[{"Code": "TransactionConflict"}, {"Code": "None"}],
    )
    fail(client, "TransactWriteItems", conflict)

    with pytest.raises(UnavailableError):
        claim(store, task, server.id)


def test_a_claim_on_a_deleted_server_is_no_capacity_and_creates_nothing(
    store: DynamoStore, client: DynamoDBClient, table: str
) -> None:
    # GIVEN a PENDING task and a server that was unregistered
    server = make_server()
    store.put_server(server)
    store.delete_server(server.id)
    task = make_task()
    store.put_task(task)

    # WHEN the task is claimed on it
    with pytest.raises(NoCapacityError):
        claim(store, task, server.id)

    # THEN the task is still queued, and no server item appeared
    assert store.get_task(task.id) == task
    assert index_keys(client, table, task.id)["GSI2PK"] == "PENDING"
    assert raw(client, table, f"SERVER#{server.id}", "SERVER") == {}


def test_a_release_after_the_server_was_deleted_still_finishes_the_task(
    store: DynamoStore, client: DynamoDBClient, table: str, calls: list[str]
) -> None:
    # GIVEN a task PROCESSING on a server that was then unregistered
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)
    claimed = claim(store, task, server.id)
    store.delete_server(server.id)
    calls.clear()

    # WHEN it completes
    released = store.release_task(claimed, COMPLETED, server_counters={"success_count": 1})

    # THEN the transaction failed on the server only, and the task was finished without it
    # (with its owner's count of tasks in flight)
    assert calls == ["TransactWriteItems", "TransactWriteItems"]
    assert store.in_flight_by_owner() == {}
    assert store.get_task(task.id) == released
    assert released.status is TaskStatus.COMPLETED
    assert "GSI3PK" not in index_keys(client, table, task.id)
    assert raw(client, table, f"SERVER#{server.id}", "SERVER") == {}


def test_an_expired_idempotency_record_awaiting_ttl_deletion_counts_as_absent(
    store: DynamoStore,
) -> None:
    # GIVEN a record that expired, which DynamoDB's TTL has not deleted yet (it may take days)
    old = IdempotencyRecord("key-1", "hash-a", "task-a", expires_at=NOW // 1000)
    assert store.put_idempotency(old, now_s=NOW // 1000 - 60) is None

    # WHEN the key is used again after the expiry
    new = IdempotencyRecord("key-1", "hash-b", "task-b", expires_at=NOW // 1000 + 86_400)
    assert store.put_idempotency(new, now_s=NOW // 1000 + 1) is None

    # THEN the new record holds the key
    again = IdempotencyRecord("key-1", "hash-c", "task-c", expires_at=NOW // 1000 + 86_400)
    assert store.put_idempotency(again, now_s=NOW // 1000 + 2) == new


# -- outcomes (large ones: test_dynamodb_outcomes.py) ------------------------------------


def test_a_small_result_stays_on_the_task_item(
    store: DynamoStore, client: DynamoDBClient, table: str
) -> None:
    server = make_server()
    store.put_server(server)
    task = make_task()
    store.put_task(task)
    claimed = store.claim_task(task, {"status": TaskStatus.PROCESSING, "server_id": server.id, "attempts": 1})
    store.release_task(claimed, {"status": TaskStatus.COMPLETED, "result": {"ok": 1.5}})
    item = client.get_item(TableName=table, Key={"PK": {"S": f"TASK#{task.id}"}, "SK": {"S": "TASK"}})["Item"]
    assert item["result"] == {"S": '{"ok":1.5}'}
    assert "outcome_ref" not in item


# -- listing: queries only, bounded ------------------------------------------------------


def test_listing_every_status_is_six_bounded_queries(store: DynamoStore, calls: list[str]) -> None:
    # GIVEN tasks in three statuses
    for i, status in enumerate([TaskStatus.PENDING, TaskStatus.COMPLETED, TaskStatus.FAILED] * 3):
        store.put_task(make_task(status=status, created_at=NOW + i))
    calls.clear()

    # WHEN the newest four are listed
    page = store.list_tasks(4)

    # THEN one Query per status partition was sent, and nothing scanned
    assert calls == ["Query"] * len(TaskStatus)
    assert [t.created_at for t in page.tasks] == [NOW + 8, NOW + 7, NOW + 6, NOW + 5]
    assert page.after == f"{NOW + 5:013d}#{page.tasks[-1].id}"


def test_an_owners_filtered_listing_reads_at_most_its_budget_per_call(
    store: DynamoStore, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an owner with many tasks of which only the oldest two FAILED, and a small read budget
    monkeypatch.setattr("core.aws.dynamodb.task_queries._FILTERED_READ_BUDGET", 4)
    for i in range(12):
        status = TaskStatus.FAILED if i < 2 else TaskStatus.COMPLETED
        store.put_task(make_task(owner="erin", status=status, created_at=NOW + i))
    calls.clear()

    # WHEN the owner's FAILED tasks are asked for
    first = store.list_tasks(5, owner="erin", status=TaskStatus.FAILED)

    # THEN the first call stops after its budget with none found, but a position to go on from
    assert first.tasks == [] and first.after is not None
    assert calls == ["Query"]
    # AND following the positions finds both, oldest last, and then ends
    found, before = [], first.after
    while before is not None:
        page = store.list_tasks(5, owner="erin", status=TaskStatus.FAILED, before=before)
        found += [t.created_at for t in page.tasks]
        before = page.after
    assert found == [NOW + 1, NOW]

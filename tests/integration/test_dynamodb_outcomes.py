"""Large results and errors on the DynamoDB adapter, under moto with a real S3 bucket: past
OUTCOME_INLINE_LIMIT they go to the payload bucket before the transaction that finishes the
task, the item keeping the object's key; a failed write leaves the task as it was; tasks an
earlier version finished with an OUTCOME item still read."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from core.aws.dynamodb import DynamoStore
from core.aws.dynamodb.items import OUTCOME_INLINE_LIMIT, task_to_item
from core.aws.dynamodb.keys import outcome_key
from core.aws.payloads import PayloadBucket
from core.domain.models import Endpoints, Server, Task, TaskStatus
from core.errors import StaleWriteError, UnavailableError
from tests.support.aws import TEST_PAYLOAD_BUCKET, lambda_account

NOW = 1_700_000_000_000
EXPIRES_S = NOW // 1000 + 7 * 86_400
_ids = itertools.count(1)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    with lambda_account(monkeypatch) as account:
        account.client = account.store.client
        account.s3 = boto3.client("s3")
        yield account


@pytest.fixture
def requests(aws: SimpleNamespace) -> list[str]:
    """The DynamoDB and S3 operations the store sends from now on, in order."""
    sent: list[str] = []

    def record(model: Any, **_: Any) -> None:
        sent.append(model.name)

    aws.client.meta.events.register("before-call.dynamodb.*", record)
    aws.store.payloads._client.meta.events.register("before-call.s3.*", record)
    return sent


def make_task(**overrides: Any) -> Task:
    fields: dict[str, Any] = {
        "id": f"task-{next(_ids)}",
        "owner": "alice",
        "type": "image.generate",
        "priority": 5,
        "payload": {"prompt": "a cat"},
        "created_at": NOW,
        "updated_at": NOW,
        "queued_at": NOW + 5,
    }
    return Task(**(fields | overrides))


def running(store: DynamoStore, **overrides: Any) -> Task:
    """A new task PROCESSING on a new server (attempt 1)."""
    server_id = f"srv-{next(_ids)}"
    endpoints = Endpoints(predict="http://gpu:8080/predict", health="http://gpu:8080/health")
    store.put_server(Server(id=server_id, name=server_id, endpoints=endpoints, registered_at=NOW))
    task = make_task(**overrides)
    store.put_task(task)
    changes = {"status": TaskStatus.PROCESSING, "server_id": server_id, "attempts": 1, "started_at": NOW + 10}
    return store.claim_task(task, changes)


def completed(result: Any) -> dict[str, Any]:
    return {
        "status": TaskStatus.COMPLETED,
        "result": result,
        "completed_at": NOW + 50,
        "expires_at": EXPIRES_S,
    }


def text_of_json_size(size: int) -> str:
    """A string whose JSON is `size` bytes (its two quotes included)."""
    return "r" * (size - 2)


def item(aws: SimpleNamespace, task_id: str, sort_key: str = "TASK") -> dict[str, Any]:
    key = {"PK": {"S": f"TASK#{task_id}"}, "SK": {"S": sort_key}}
    found: dict[str, Any] = aws.client.get_item(TableName=aws.table, Key=key, ConsistentRead=True).get(
        "Item", {}
    )
    return found


def objects(aws: SimpleNamespace, task_id: str) -> list[str]:
    listed = aws.s3.list_objects_v2(Bucket=TEST_PAYLOAD_BUCKET, Prefix=f"results/{task_id}/")
    return [entry["Key"] for entry in listed.get("Contents", [])]


def cold(aws: SimpleNamespace) -> DynamoStore:
    """The same table and bucket as another container sees them: nothing cached."""
    return DynamoStore(
        aws.table, client=aws.client, payloads=PayloadBucket(TEST_PAYLOAD_BUCKET, client=aws.s3)
    )


@pytest.mark.parametrize("size", [OUTCOME_INLINE_LIMIT, OUTCOME_INLINE_LIMIT + 1], ids=["at-limit", "over"])
def test_a_result_is_inline_up_to_the_limit_and_in_the_bucket_past_it(
    aws: SimpleNamespace, requests: list[str], size: int
) -> None:
    # GIVEN a running task
    task = running(aws.store)
    requests.clear()

    # WHEN it completes with a result of `size` bytes of JSON
    result = text_of_json_size(size)
    aws.store.release_task(task, completed(result))
    sent = list(requests)

    # THEN up to the limit the item holds it; past it one object does, written before the
    # transaction, and the item holds its key
    stored = item(aws, task.id)
    if size <= OUTCOME_INLINE_LIMIT:
        assert sent == ["TransactWriteItems"]
        assert "outcome_ref" not in stored and len(stored["result"]["S"]) == size
        assert objects(aws, task.id) == []
    else:
        assert sent == ["PutObject", "TransactWriteItems"]
        (key,) = objects(aws, task.id)
        assert "result" not in stored and stored["outcome_ref"] == {"S": key}
        assert key.startswith(f"results/{task.id}/1-") and key.endswith(".json")
    # AND the task reads back whole, from another container too, its slot freed
    for store in (aws.store, cold(aws)):
        got = store.get_task(task.id)
        assert got is not None and got.status is TaskStatus.COMPLETED and got.result == result
    assert aws.store.get_server(task.server_id).active_tasks == 0  # type: ignore[arg-type,union-attr]


def test_a_large_result_next_to_a_large_payload_stays_under_the_item_limit(aws: SimpleNamespace) -> None:
    # GIVEN a task with a 200 KiB payload (in the bucket), running
    task = running(aws.store, payload={"frames": "p" * 200 * 1024})

    # WHEN it completes with a 200 KiB result, and is then retried by hand
    result = {"frames": "r" * 200 * 1024, "scale": 0.1}
    aws.store.release_task(task, completed(result))
    got = cold(aws).get_task(task.id)
    assert got is not None and got.result == result and got.payload == task.payload
    assert len(str(item(aws, task.id))) < 4096  # the item holds two keys, not the values
    aws.store.update_task(
        task.id,
        {"status": TaskStatus.PENDING, "result": None, "queued_at": NOW + 100},
        from_status={TaskStatus.COMPLETED},
    )

    # THEN the retry dropped the reference: the old result is never read again
    assert "outcome_ref" not in item(aws, task.id)
    again = cold(aws).get_task(task.id)
    assert again is not None and again.result is None and again.payload == task.payload


def test_a_large_error_is_kept_through_the_retry_and_beside_the_later_result(aws: SimpleNamespace) -> None:
    # GIVEN a task whose first attempt failed with a 40 KiB error, requeued by the release
    task = running(aws.store)
    error = {"trace": "e" * 40 * 1024}
    requeued = aws.store.release_task(
        task, {"status": TaskStatus.PENDING, "error": error, "queued_at": NOW + 60, "server_id": None}
    )
    assert cold(aws).get_task(task.id).error == error  # type: ignore[union-attr]

    # WHEN a second attempt is claimed and completes with a small result
    server = aws.store.get_server(task.server_id)
    assert server is not None
    second = aws.store.claim_task(
        requeued,
        {"status": TaskStatus.PROCESSING, "server_id": server.id, "attempts": 2, "started_at": NOW + 70},
    )
    aws.store.release_task(second, completed({"ok": 1}))

    # THEN the task reads back with both, from a new object (the first attempt's stays as it was)
    got = cold(aws).get_task(task.id)
    assert got is not None and (got.result, got.error) == ({"ok": 1}, error)
    assert sorted(key.split("/")[-1][:2] for key in objects(aws, task.id)) == ["1-", "2-"]


def test_a_duplicate_completion_keeps_the_first_result_and_its_object(
    aws: SimpleNamespace, requests: list[str]
) -> None:
    # GIVEN a running task completed with a large result
    task = running(aws.store)
    first = {"answer": "a" * 40 * 1024}
    aws.store.release_task(task, completed(first))
    (kept,) = objects(aws, task.id)
    requests.clear()

    # WHEN a duplicate of the completion (the same attempt, read before the first won) arrives
    # with another large result
    with pytest.raises(StaleWriteError) as stale:
        aws.store.release_task(task, completed({"answer": "b" * 40 * 1024}))

    # THEN its object was written under a key of its own and its transaction lost: the task
    # keeps the first result, whose object is untouched; the loser's is an orphan that expires
    assert requests[:2] == ["PutObject", "TransactWriteItems"]
    assert stale.value.current is not None and stale.value.current.result == first
    assert item(aws, task.id)["outcome_ref"] == {"S": kept}
    assert cold(aws).get_task(task.id).result == first  # type: ignore[union-attr]
    body = aws.s3.get_object(Bucket=TEST_PAYLOAD_BUCKET, Key=kept)["Body"].read()
    assert b'"a' in body and b'"b' not in body
    assert len(objects(aws, task.id)) == 2


def test_a_bucket_that_fails_leaves_the_task_as_it_was(aws: SimpleNamespace, requests: list[str]) -> None:
    # GIVEN a running task, and a bucket that refuses writes
    task = running(aws.store)
    before = item(aws, task.id)
    store = DynamoStore(aws.table, client=aws.client, payloads=PayloadBucket("no-such-bucket", client=aws.s3))
    requests.clear()

    # WHEN it completes with a large result
    with pytest.raises(UnavailableError):
        store.release_task(task, completed({"answer": "a" * 40 * 1024}))

    # THEN nothing reached the table: the task is still PROCESSING, its slot still held
    assert "TransactWriteItems" not in requests
    assert item(aws, task.id) == before
    assert aws.store.get_server(task.server_id).active_tasks == 1  # type: ignore[arg-type,union-attr]
    # AND the backend's retry, once the bucket answers, completes it
    aws.store.release_task(task, completed({"answer": "a" * 40 * 1024}))
    assert aws.store.get_task(task.id).status is TaskStatus.COMPLETED  # type: ignore[union-attr]


def test_a_task_finished_by_an_earlier_version_reads_its_outcome_item(aws: SimpleNamespace) -> None:
    # GIVEN items as the previous version wrote them: a FAILED task whose large error and
    # result are in its OUTCOME item (outcome_ref true), and a PENDING one requeued that way
    result, error = {"frames": "r" * 40 * 1024}, {"trace": "e" * 40 * 1024}
    done = make_task(status=TaskStatus.FAILED, attempts=1, completed_at=NOW + 50, expires_at=EXPIRES_S)
    waiting = make_task(attempts=1)
    for task in (done, waiting):
        old = dict(task_to_item(task)) | {"outcome_ref": {"BOOL": True}}
        aws.client.put_item(TableName=aws.table, Item=old)
        outcome = outcome_key(task.id) | {
            "result": {"S": f'{{"frames":"{"r" * 40 * 1024}"}}'},
            "error": {"S": f'{{"trace":"{"e" * 40 * 1024}"}}'},
        }
        aws.client.put_item(TableName=aws.table, Item=outcome)

    # WHEN they are read
    got = aws.store.get_task(done.id)

    # THEN the OUTCOME item's values are merged in, as before
    assert got is not None and (got.result, got.error) == (result, error)
    assert aws.store.get_task(waiting.id).error == error  # type: ignore[union-attr]
    assert objects(aws, done.id) == [] and objects(aws, waiting.id) == []

"""AWS test support: read template.yaml, and build its resources in the current moto mock.

Tests create the table only through `create_table`, from the template's own definition, so the
template and the tests cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from tools import moto_env

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
TEST_TABLE_NAME = "taskgate-test"
TEST_PAYLOAD_BUCKET = "taskgate-test-payloads"


def load_template(path: Path | None = None) -> dict[str, Any]:
    return moto_env.load_template(path or TEMPLATE)


def create_table(client: DynamoDBClient, path: Path | None = None) -> str:
    """Create the template's `Table` with `client` (in the current moto mock); return its name."""
    template = load_template(path)
    name = template["Resources"]["Table"]["Properties"].get("TableName")
    name = name if isinstance(name, str) else TEST_TABLE_NAME
    moto_env.create_table(client, name, template)
    client.get_waiter("table_exists").wait(TableName=name)
    return name


EVENTS = Path(__file__).resolve().parents[2] / "events"


def load_event(name: str, token: str | None = None) -> dict[str, Any]:
    """An event from events/ (with a bearer token put in, for the API Gateway ones)."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    if token is not None:
        event["headers"]["authorization"] = f"Bearer {token}"
    return event


@contextlib.contextmanager
def lambda_account(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[SimpleNamespace]:
    """A fresh moto account as the Lambda functions see it: fake credentials and `env` in the
    environment, the template's table and a dispatch queue, TABLE_NAME and QUEUE_URL set.
    Yields the store on that table, the SQS client and the queue URL."""
    import boto3
    from moto import mock_aws

    from core.aws.dynamodb import DynamoStore
    from core.aws.payloads import PayloadBucket

    for name, value in {**moto_env.FAKE_AWS_ENV, **env}.items():
        monkeypatch.setenv(name, value)
    # The dispatcher handles a batch's records in threads: moto must apply each request whole,
    # as DynamoDB does, or two threads could both win one conditional claim.
    with moto_env.one_request_at_a_time(), mock_aws():
        dynamodb = boto3.client("dynamodb")
        table = create_table(dynamodb)
        sqs = boto3.client("sqs")
        queue_url = sqs.create_queue(QueueName="taskgate-tasks")["QueueUrl"]
        boto3.client("s3").create_bucket(Bucket=TEST_PAYLOAD_BUCKET)
        monkeypatch.setenv("TABLE_NAME", table)
        monkeypatch.setenv("QUEUE_URL", queue_url)
        monkeypatch.setenv("PAYLOAD_BUCKET", TEST_PAYLOAD_BUCKET)
        payloads = PayloadBucket(TEST_PAYLOAD_BUCKET, client=boto3.client("s3"))
        yield SimpleNamespace(
            store=DynamoStore(table, client=dynamodb, payloads=payloads),
            sqs=sqs,
            queue_url=queue_url,
            table=table,
        )

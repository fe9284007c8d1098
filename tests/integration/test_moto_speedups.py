"""`moto_env.faster_dynamodb`, which `taskgate dev --aws` runs under: the same answers as moto's
own DynamoDB, without its whole-table sort per Query and deep copy per transaction.

GIVEN the template's table under moto, WHEN the same requests are made with and without the
speedups, THEN the results, the cancellation reasons and what is left in the table agree, and
a cancelled transaction wrote nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tests.support.aws import create_table
from tools import moto_env


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    for name, value in moto_env.FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        yield client, create_table(client)


def put(client: Any, name: str, pk: str, sk: str, **attributes: int) -> None:
    item = {"PK": {"S": pk}, "SK": {"S": sk}, **{k: {"N": str(v)} for k, v in attributes.items()}}
    client.put_item(TableName=name, Item=item)


def claim(name: str, server: str, task: str) -> list[dict[str, Any]]:
    """A claim as the store makes it: a slot if one is free, and the task if still PENDING."""
    return [
        {
            "Update": {
                "TableName": name,
                "Key": {"PK": {"S": "SERVERS"}, "SK": {"S": f"SERVER#{server}"}},
                "UpdateExpression": "SET active = active + :one",
                "ConditionExpression": "active < :max",
                "ExpressionAttributeValues": {":one": {"N": "1"}, ":max": {"N": "1"}},
            }
        },
        {
            "Update": {
                "TableName": name,
                "Key": {"PK": {"S": f"TASK#{task}"}, "SK": {"S": "TASK"}},
                "UpdateExpression": "SET pending = :no",
                "ConditionExpression": "pending = :yes",
                "ExpressionAttributeValues": {":no": {"N": "0"}, ":yes": {"N": "1"}},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        },
    ]


def run(client: Any, name: str) -> tuple[list[Any], list[dict[str, Any]]]:
    """Two claims on a one-slot server (the second finds it full and its task taken), then
    every item and a Query; returns what each claim answered and what the table holds."""
    put(client, name, "SERVERS", "SERVER#s", active=0)
    put(client, name, "TASK#t1", "TASK", pending=1)
    put(client, name, "TASK#t2", "TASK", pending=0)
    answers: list[Any] = []
    for task in ("t1", "t2"):
        try:
            client.transact_write_items(TransactItems=claim(name, "s", task))
            answers.append("ok")
        except ClientError as error:
            answers.append(error.response["CancellationReasons"])
    items = client.scan(TableName=name)["Items"]
    queried = client.query(
        TableName=name,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": "SERVERS"}},
    )["Items"]
    return answers, sorted(items, key=lambda item: (item["PK"]["S"], item["SK"]["S"])) + queried


def test_answers_and_table_agree_with_moto(table: tuple[Any, str]) -> None:
    client, name = table
    with moto_env.one_request_at_a_time():
        expected = run(client, name)
    for item in client.scan(TableName=name)["Items"]:
        client.delete_item(TableName=name, Key={"PK": item["PK"], "SK": item["SK"]})

    with moto_env.one_request_at_a_time(), moto_env.faster_dynamodb():
        got = run(client, name)

    assert got == expected
    answers, items = got
    # the first claim took the slot and the task; the second wrote nothing
    assert answers[0] == "ok"
    assert [reason["Code"] for reason in answers[1]] == ["ConditionalCheckFailed", "ConditionalCheckFailed"]
    assert answers[1][1]["Item"]["pending"] == {"N": "0"}
    by_key = {(item["PK"]["S"], item["SK"]["S"]): item for item in items}
    assert by_key[("SERVERS", "SERVER#s")]["active"] == {"N": "1"}
    assert by_key[("TASK#t2", "TASK")]["pending"] == {"N": "0"}


def test_a_cancelled_transaction_writes_none_of_its_items(table: tuple[Any, str]) -> None:
    client, name = table
    put(client, name, "SERVERS", "SERVER#s", active=0)
    put(client, name, "TASK#t", "TASK", pending=0)  # taken already: the second condition fails
    with moto_env.one_request_at_a_time(), moto_env.faster_dynamodb():
        with pytest.raises(ClientError) as cancelled:
            client.transact_write_items(TransactItems=claim(name, "s", "t"))
        server = client.get_item(TableName=name, Key={"PK": {"S": "SERVERS"}, "SK": {"S": "SERVER#s"}})
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    codes = [reason["Code"] for reason in cancelled.value.response["CancellationReasons"]]
    assert codes == ["None", "ConditionalCheckFailed"]
    assert server["Item"]["active"] == {"N": "0"}  # the slot was not taken


def test_a_repeated_key_is_refused_as_moto_refuses_it(table: tuple[Any, str]) -> None:
    client, name = table
    put(client, name, "SERVERS", "SERVER#s", active=0)
    twice = claim(name, "s", "t")[:1] * 2
    with moto_env.one_request_at_a_time(), moto_env.faster_dynamodb():
        with pytest.raises(ClientError) as refused:
            client.transact_write_items(TransactItems=twice)
        server = client.get_item(TableName=name, Key={"PK": {"S": "SERVERS"}, "SK": {"S": "SERVER#s"}})
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert server["Item"]["active"] == {"N": "0"}

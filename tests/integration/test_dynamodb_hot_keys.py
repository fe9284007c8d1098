"""The keys that a whole fleet's traffic writes are spread over partitions: each server is its own
partition (claims and releases write it), the fleet is listed through ByQueue without a Scan,
and round-robin turns come from several sequence counters, yet every server is still picked."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import msgspec
import pytest
from moto import mock_aws

from core.aws.dynamodb import DynamoStore, keys
from core.domain import balancer
from core.domain.models import Endpoints, Server
from tests.contract.factories import claim_changes, completed_changes, make_task
from tests.support.aws import create_table
from tools.moto_env import FAKE_AWS_ENV

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

NOW = 1_700_000_000_000


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoDBClient]:
    for name, value in FAKE_AWS_ENV.items():
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
def requests(client: DynamoDBClient) -> list[tuple[str, dict[str, Any]]]:
    """The DynamoDB operations the client sends from now on, with their parameters."""
    sent: list[tuple[str, dict[str, Any]]] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        sent.append((model.name, params))

    client.meta.events.register("provide-client-params.dynamodb.*", record)
    return sent


def server(server_id: str) -> Server:
    endpoints = Endpoints(predict="http://gpu:8080/predict", health="http://gpu:8080/health")
    return Server(id=server_id, name=server_id, endpoints=endpoints, registered_at=NOW)


def partition_items(client: DynamoDBClient, table: str, pk: str) -> list[dict[str, Any]]:
    return client.query(
        TableName=table,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ConsistentRead=True,
    )["Items"]


def written_partitions(requests: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [
        keys.partition_of(next(iter(write.values()))["Key"])
        for operation, params in requests
        if operation == "TransactWriteItems"
        for write in params["TransactItems"]
    ]


def test_two_servers_live_in_partitions_of_their_own(
    store: DynamoStore, client: DynamoDBClient, table: str
) -> None:
    # GIVEN two registered servers
    store.put_server(server("gpu-1"))
    store.put_server(server("gpu-2"))

    # WHEN each one's partition is read
    first = partition_items(client, table, "SERVER#gpu-1")
    second = partition_items(client, table, "SERVER#gpu-2")

    # THEN each holds that server alone, so the two never share a partition's throughput
    assert [(i["PK"]["S"], i["SK"]["S"], i["id"]["S"]) for i in first] == [
        ("SERVER#gpu-1", "SERVER", "gpu-1")
    ]
    assert [(i["PK"]["S"], i["SK"]["S"], i["id"]["S"]) for i in second] == [
        ("SERVER#gpu-2", "SERVER", "gpu-2")
    ]
    assert keys.partition_of(keys.server_key("gpu-1")) != keys.partition_of(keys.server_key("gpu-2"))
    assert keys.partition_kind("SERVER#gpu-1") == "server"


def test_a_claim_and_its_release_write_only_their_own_servers_partition(
    store: DynamoStore, requests: list[tuple[str, dict[str, Any]]]
) -> None:
    # GIVEN two servers and a PENDING task
    store.put_server(server("gpu-1"))
    store.put_server(server("gpu-2"))
    task = make_task()
    store.put_task(task)
    requests.clear()

    # WHEN it is claimed on gpu-2 and completed
    claimed = store.claim_task(task, claim_changes(task, "gpu-2"))
    store.release_task(claimed, completed_changes())

    # THEN the transactions wrote gpu-2's partition, never gpu-1's nor any shared server one
    servers_written = [pk for pk in written_partitions(requests) if keys.partition_kind(pk) == "server"]
    assert servers_written == ["SERVER#gpu-2", "SERVER#gpu-2"]


def test_listing_reads_the_fleet_index_then_the_servers_in_batches_of_100(
    store: DynamoStore, requests: list[tuple[str, dict[str, Any]]]
) -> None:
    # GIVEN 150 servers, one of them since deleted
    for i in range(150):
        store.put_server(server(f"s{i:03d}"))
    store.delete_server("s007")
    requests.clear()

    # WHEN the fleet is listed
    listed = store.list_servers()

    # THEN it took one Query of ByQueue's fleet partition and two consistent BatchGetItems
    # (no Scan), and lists the 149 servers there are, by id
    assert [op for op, _ in requests] == ["Query", "BatchGetItem", "BatchGetItem"]
    query = requests[0][1]
    assert (query["IndexName"], query["ExpressionAttributeValues"]) == ("ByQueue", {":fleet": {"S": "FLEET"}})
    for _, params in requests[1:]:
        (batch,) = params["RequestItems"].values()
        assert batch["ConsistentRead"] is True
        assert len(batch["Keys"]) <= 100
    assert [s.id for s in listed] == sorted(f"s{i:03d}" for i in range(150) if i != 7)


def test_round_robin_turns_spread_over_the_sequence_counters_and_reach_every_server(
    store: DynamoStore, client: DynamoDBClient, table: str
) -> None:
    # GIVEN five servers and the counters picked by a seeded random
    for i in range(5):
        store.put_server(server(f"gpu-{i}"))
    fleet = store.list_servers()
    store.sequence_rng = random.Random(20)

    # WHEN round-robin picks 60 times, each pick taking a turn as the dispatcher does
    picks = Counter(
        balancer.order(
            "round-robin", fleet, sequence=lambda: store.next_in_sequence("round_robin"), rng=random.Random(0)
        )[0].id
        for _ in range(60)
    )

    # THEN every counter took some of the turns (each its own partition), together all 60
    taken = [
        int(items[0]["n"]["N"])
        if (items := partition_items(client, table, f"SEQUENCE#round_robin#{i}"))
        else 0
        for i in range(keys.SEQUENCE_COUNTERS)
    ]
    assert keys.SEQUENCE_COUNTERS > 1
    assert all(n > 0 for n in taken) and sum(taken) == 60
    # ... and every server was picked, each within the count of counters of an even share
    assert set(picks) == {s.id for s in fleet}
    assert all(abs(n - 60 / 5) < keys.SEQUENCE_COUNTERS for n in picks.values()), picks


def test_the_upgrade_moves_old_layout_servers_to_their_own_partitions_once(
    store: DynamoStore, client: DynamoDBClient, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.aws.dynamodb.items import server_to_item
    from tools import upgrade_table

    # GIVEN a table of the layout before: two servers in the SERVERS partition (one bound to a
    # service token, one with a task's slot taken), a round-robin counter in SEQUENCE, and one
    # of the servers registered again under the new layout since
    bound = msgspec.structs.replace(server("gpu-1"), token_id="tok-1", active_tasks=1, version=3)
    for old in (bound, server("gpu-2")):
        item = {name: value for name, value in server_to_item(old).items() if not name.startswith("GSI")}
        client.put_item(
            TableName=table, Item=item | {"PK": {"S": "SERVERS"}, "SK": {"S": f"SERVER#{old.id}"}}
        )
    client.put_item(
        TableName=table, Item={"PK": {"S": "SEQUENCE"}, "SK": {"S": "round_robin"}, "n": {"N": "41"}}
    )
    again = msgspec.structs.replace(server("gpu-2"), name="re-registered")
    store.put_server(again)

    # WHEN the upgrade runs, twice
    assert upgrade_table.main(["--table", table]) == 0
    assert upgrade_table.main(["--table", table]) == 0

    # THEN the first moved gpu-1 as it was and kept gpu-2's new registration, the old
    # partitions are empty, and the second run found nothing to do
    assert store.list_servers() == [bound, again]
    assert partition_items(client, table, "SERVERS") == []
    assert partition_items(client, table, "SEQUENCE") == []
    first, second = capsys.readouterr().out.splitlines()
    assert first.endswith(
        "moved to their own partitions: 1; already there: 1; old round-robin counters removed: 1"
    )
    assert second.endswith(
        "moved to their own partitions: 0; already there: 0; old round-robin counters removed: 0"
    )

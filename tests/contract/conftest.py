"""One suite, every adapter: each contract test runs once per Store implementation.

- sqlite: `SqliteStore` on a fresh file under `tmp_path`.
- dynamodb: `DynamoStore` under moto, on a fresh table built from template.yaml's definition.
- memory: `MemoryStore` on a fresh `MemoryData`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from core.ports.storage import Store
from tools.moto_env import FAKE_AWS_ENV

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

StoreFactory = Callable[[], Store]

# Set before any boto3 client exists, so nothing can reach a real account.
UNSET_AWS_ENV = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB")


@pytest.fixture(scope="module")
def moto_dynamodb() -> Iterator[DynamoDBClient]:
    """A moto mock and one client for a whole module: a client takes ~0.1 s to build, a table
    a few ms. Each test still gets a fresh table (see `open_store`).

    DynamoDB applies each request (a conditional update, a transaction) atomically; moto does
    not when threads call it at once (lost ADDs, double transaction winners, "dictionary
    changed size during iteration"). So moto handles one request at a time here: threads still
    interleave between requests, which is where an adapter's races are.
    """
    import boto3
    from moto import mock_aws

    from tests.support import aws
    from tools.moto_env import one_request_at_a_time

    with pytest.MonkeyPatch.context() as patch, one_request_at_a_time():
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        for name in UNSET_AWS_ENV:
            patch.delenv(name, raising=False)
        # Parse template.yaml once per module, not once per table.
        load, template = aws.load_template, aws.load_template()

        def load_once(path: Path | None = None) -> dict[str, Any]:
            return copy.deepcopy(template) if path is None else load(path)

        patch.setattr(aws, "load_template", load_once)
        with mock_aws():
            yield boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture(params=["sqlite", "dynamodb", "memory"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens a Store on this test's data; each call is another instance on the same data
    (the same file; the same table and client; the same data), as another process or Lambda
    would be."""
    opened: list[Store] = []
    if request.param == "memory":
        from core.local.memory import MemoryData, MemoryStore

        data = MemoryData()

        def open_memory() -> Store:
            opened.append(MemoryStore(data))
            return opened[-1]

        yield open_memory
        _close_all(opened)
    elif request.param == "sqlite":
        from core.local.sqlite import SqliteStore

        path = str(tmp_path / "taskgate.db")

        def open_sqlite() -> Store:
            opened.append(SqliteStore(path))
            return opened[-1]

        yield open_sqlite
        _close_all(opened)
    else:
        from core.aws.dynamodb import DynamoStore
        from tests.support.aws import create_table

        client: DynamoDBClient = request.getfixturevalue("moto_dynamodb")
        table_name = create_table(client)

        def open_dynamo() -> Store:
            opened.append(DynamoStore(table_name, client=client))
            return opened[-1]

        yield open_dynamo
        _close_all(opened)
        client.delete_table(TableName=table_name)


def _close_all(stores: list[Store]) -> None:
    while stores:
        stores.pop().close()


@pytest.fixture
def store(open_store: StoreFactory) -> Store:
    return open_store()

"""The requests every part of the DynamoDB adapter makes: conditional writes, transactions,
paged queries, and the translation of throttling and timeouts into UnavailableError."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb.items import OUTCOME_FIELDS, PAYLOAD_REF, outcome_object, task_from_item
from core.domain.models import Server, Task, WebhookDelivery
from core.errors import StaleWriteError, UnavailableError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef, TransactWriteItemTypeDef

    from core.aws.dynamodb.items import Item
    from core.aws.payloads import PayloadBucket

T = TypeVar("T", Task, Server, WebhookDelivery)

BUSY = "Storage is busy, retry shortly"
_BUSY_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        # The same, as a transaction's cancellation reasons.
        "ProvisionedThroughputExceeded",
        "ThrottlingError",
    }
)
CONDITION_FAILED = "ConditionalCheckFailedException"
CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
# Two transactions on one item at once: the loser is cancelled and may simply try again.
_CONFLICT_RETRIES = 4
_CONFLICT_BACKOFF_S = 0.025


def code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def old_item(error: ClientError) -> Item | None:
    """The item as it was when a condition failed (ReturnValuesOnConditionCheckFailure)."""
    response = cast("Mapping[str, Any]", error.response)
    return cast("Item | None", response.get("Item"))


@contextmanager
def translated_errors() -> Iterator[None]:
    try:
        yield
    except ClientError as error:
        if code(error) in _BUSY_CODES:
            raise UnavailableError(BUSY) from error
        raise
    except (BotocoreConnectionError, HTTPClientError) as error:  # timeouts, resets, DNS
        raise UnavailableError(BUSY) from error


class DynamoTable:
    """One table and one client; each entity's part of DynamoStore builds on its requests."""

    def __init__(
        self, table_name: str, client: DynamoDBClient | None = None, payloads: PayloadBucket | None = None
    ) -> None:
        """`client` is created once per process when not given (Lambda reuses it). With
        `payloads`, large task payloads and outcomes live in that bucket (core.aws.payloads)."""
        self.table_name = table_name
        self._client = client or boto3.client("dynamodb", config=CLIENT_CONFIG)
        self.payloads = payloads

    def _task_from(self, item: Item) -> Task:
        """A task item read back whole: its payload, result and error fetched if they are in
        the bucket."""
        if PAYLOAD_REF in item and "payload" not in item:
            item = {**item, "payload": {"S": self._bucket().get(item[PAYLOAD_REF]["S"])}}
        if (key := outcome_object(item)) is not None:
            outcome = self._bucket().get_outcome(key)
            item = {name: value for name, value in item.items() if name not in OUTCOME_FIELDS}
            item.update({name: {"S": outcome[name]} for name in OUTCOME_FIELDS if name in outcome})
        return task_from_item(item)

    def _bucket(self) -> PayloadBucket:
        if self.payloads is None:
            raise RuntimeError("a task's payload or outcome is in the payload bucket: set PAYLOAD_BUCKET")
        return self.payloads

    @property
    def client(self) -> DynamoDBClient:
        """The one client, for other adapters on the same table (WebSocket connections)."""
        return self._client

    def _get(self, key: Item) -> Item | None:
        with translated_errors():
            response = self._client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True)
        return response.get("Item")

    def _put_new(self, item: Item) -> None:
        with translated_errors():
            try:
                self._client.put_item(
                    TableName=self.table_name,
                    Item=item,
                    ConditionExpression="attribute_not_exists(PK)",
                )
            except ClientError as error:
                if code(error) != CONDITION_FAILED:
                    raise
                raise StaleWriteError(None) from None

    def _update_or_stale(self, key: Item, update: Expression, parse: Callable[[Item], T]) -> T:
        """Run a conditional update; return the item as written, or raise StaleWriteError
        with the item as it is (None if there is none)."""
        with translated_errors():
            try:
                response = self._client.update_item(
                    TableName=self.table_name,
                    Key=key,
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    **update.request(),
                )
            except ClientError as error:
                if code(error) != CONDITION_FAILED:
                    raise
                old = old_item(error)
                raise StaleWriteError(None if old is None else parse(old)) from None
        return parse(response["Attributes"])

    def _add(self, key: Item, update: Expression, attribute: str) -> int:
        """Run an update that ADDs to `attribute`; return its new value."""
        with translated_errors():
            response = self._client.update_item(
                TableName=self.table_name, Key=key, ReturnValues="UPDATED_NEW", **update.request()
            )
        return int(response["Attributes"][attribute]["N"])

    def _query(self, request: QueryInputTypeDef, limit: int | None = None) -> list[Item]:
        items: list[Item] = []
        while limit is None or len(items) < limit:
            if limit is not None:
                request["Limit"] = limit - len(items)
            with translated_errors():
                response = self._client.query(**request)
            items.extend(response["Items"])
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return items

    def _batch_get(self, keys: list[Item], *, consistent: bool = False) -> list[Item]:
        items: list[Item] = []
        pending: list[Item] = keys
        for attempt in range(8):
            with translated_errors():
                response = self._client.batch_get_item(
                    RequestItems={self.table_name: {"Keys": pending, "ConsistentRead": consistent}}
                )
            items.extend(response["Responses"].get(self.table_name, []))
            unprocessed = response.get("UnprocessedKeys", {}).get(self.table_name)
            if not unprocessed:
                return items
            pending = list(unprocessed["Keys"])
            time.sleep(random.uniform(0, _CONFLICT_BACKOFF_S * 2**attempt))
        raise UnavailableError(BUSY)

    def _update(self, key: Item, update: Expression, *, return_old: bool = False) -> dict[str, Any]:
        """One Update of a TransactWriteItems request."""
        request: dict[str, Any] = {"TableName": self.table_name, "Key": key, **update.request()}
        if return_old:
            request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Update": request}

    def _put(self, item: Item) -> dict[str, Any]:
        """One unconditional Put of a TransactWriteItems request."""
        return {"Put": {"TableName": self.table_name, "Item": item}}

    def _transact(self, *writes: dict[str, Any]) -> list[Mapping[str, Any] | None]:
        """Run the writes as one transaction. Returns, per write, None if the whole
        transaction committed or that write's condition held, else its cancellation reason.
        Retries a conflict with a concurrent transaction a few times, with jitter."""
        items = cast("list[TransactWriteItemTypeDef]", list(writes))
        for attempt in range(_CONFLICT_RETRIES):
            with translated_errors():
                try:
                    self._client.transact_write_items(TransactItems=items)
                    return [None] * len(writes)
                except ClientError as error:
                    if code(error) != "TransactionCanceledException":
                        raise
                    reasons: list[Mapping[str, Any]] = list(error.response.get("CancellationReasons", []))
                    codes = {reason.get("Code", "None") for reason in reasons}
                    if codes & _BUSY_CODES:
                        raise UnavailableError(BUSY) from error
                    if "ConditionalCheckFailed" in codes:
                        return [r if r.get("Code") == "ConditionalCheckFailed" else None for r in reasons]
                    if "TransactionConflict" not in codes:
                        raise
            time.sleep(random.uniform(0, _CONFLICT_BACKOFF_S * 2**attempt))
        raise UnavailableError(BUSY)

"""WebSocket connections and their subscriptions in the DynamoDB table (AWS only: one machine
keeps them in memory, core.local.update_hub). Patterns 20-25 of the access-pattern table in
core.aws.dynamodb.

A subscription is an item in its task's own SUBS#<task> partition, so the notifier finds a
task's subscribers with one Query; the connection item lists the tasks it follows, so closing
it deletes their items without a query. Both expire by TTL after API Gateway's two-hour
connection limit, in case a $disconnect never came.

A connection whose token expires before that limit also has an item in the WSEXP#<hour> of its
expiry: the sweeper queries the last few hours (never a scan) and closes what has expired.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

import boto3
import msgspec
from botocore.exceptions import ClientError

# The table adapter's client settings and error translation, shared so both behave alike.
from core.aws.dynamodb._requests import BUSY, CLIENT_CONFIG, CONDITION_FAILED, code, translated_errors
from core.aws.dynamodb.items import FOLLOWED, TTL, from_value, to_value
from core.aws.dynamodb.keys import (
    EXPIRY_BUCKET_S,
    connection_expiry_key,
    connection_expiry_of,
    connection_expiry_partition,
    connection_id_of,
    connection_key,
    subscription_key,
    subscriptions_partition,
    task_key,
)
from core.errors import StaleWriteError, UnavailableError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import WriteRequestTypeDef

    from core.aws.dynamodb.items import Item

_BATCH_WRITE_LIMIT = 25
# API Gateway closes every WebSocket connection after two hours.
API_GATEWAY_LIMIT_S = 2 * 3600
_UNPROCESSED_RETRIES = 5


class Connection(msgspec.Struct, kw_only=True):
    """An API Gateway WebSocket connection: who opened it, and the tasks it follows (so that
    closing it finds their subscription items without a query)."""

    id: str
    sub: str
    roles: list[str]
    server_id: str | None = None
    connected_at: int
    expires_at: int
    tasks: list[str] = []


def connection_to_item(connection: Connection) -> Item:
    item = connection_key(connection.id)
    item.update(
        {
            "sub": to_value(connection.sub),
            "roles": to_value(connection.roles),
            "connected_at": to_value(connection.connected_at),
            TTL: to_value(connection.expires_at),
        }
    )
    if connection.server_id is not None:
        item["server_id"] = to_value(connection.server_id)
    return item


def ends_with_token(connection: Connection) -> bool:
    """Whether its token expires before API Gateway's limit ends it: then the sweeper must
    close it, and it has an expiry item."""
    return connection.expires_at < connection.connected_at // 1000 + API_GATEWAY_LIMIT_S


def expiry_item(connection_id: str, expires_s: int) -> Item:
    item = connection_expiry_key(connection_id, expires_s)
    # Kept until nothing can be open: a sweep that fails retries it until then.
    item[TTL] = to_value(expires_s + API_GATEWAY_LIMIT_S)
    return item


def connection_from_item(item: Item) -> Connection:
    return Connection(
        id=connection_id_of(item),
        sub=item["sub"]["S"],
        roles=from_value(item["roles"]),
        server_id=item["server_id"]["S"] if "server_id" in item else None,
        connected_at=int(item["connected_at"]["N"]),
        expires_at=int(item[TTL]["N"]),
        tasks=sorted(item["tasks"]["SS"]) if "tasks" in item else [],
    )


def subscription_to_item(task_id: str, connection: Connection) -> Item:
    item = subscription_key(task_id, connection.id)
    item["connection_id"] = to_value(connection.id)
    item[TTL] = to_value(connection.expires_at)
    return item


class ConnectionStore:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self.table_name = table_name
        self._client = client or boto3.client("dynamodb", config=CLIENT_CONFIG)

    def put_connection(self, connection: Connection) -> None:
        """Pattern 20 (and its expiry item, in the same request, if its token ends it)."""
        if not ends_with_token(connection):
            with translated_errors():
                self._client.put_item(TableName=self.table_name, Item=connection_to_item(connection))
            return
        items = [connection_to_item(connection), expiry_item(connection.id, connection.expires_at)]
        self._batch_write([{"PutRequest": {"Item": item}} for item in items])

    def get_connection(self, connection_id: str) -> Connection | None:
        """Pattern 21."""
        with translated_errors():
            found = self._client.get_item(
                TableName=self.table_name, Key=connection_key(connection_id), ConsistentRead=True
            )
        item = found.get("Item")
        return None if item is None else connection_from_item(item)

    def subscribe(self, connection: Connection, task_id: str, *, limit: int) -> None:
        """Pattern 22: add the task to the connection's set (if the connection is still open and
        follows fewer than `limit` tasks), then write the subscription item.
        StaleWriteError(the connection as it is, or None if closed) when the condition fails."""
        try:
            with translated_errors():
                self._client.update_item(
                    TableName=self.table_name,
                    Key=connection_key(connection.id),
                    UpdateExpression="ADD tasks :task",
                    ConditionExpression=(
                        "attribute_exists(PK) AND (attribute_not_exists(tasks) OR size(tasks) < :limit"
                        " OR contains(tasks, :id))"
                    ),
                    ExpressionAttributeValues={
                        ":task": {"SS": [task_id]},
                        ":id": {"S": task_id},
                        ":limit": {"N": str(limit)},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ClientError as error:
            if code(error) != CONDITION_FAILED:
                raise
            old: Any = error.response.get("Item")
            raise StaleWriteError(None if old is None else connection_from_item(old)) from None
        with translated_errors():
            self._client.put_item(TableName=self.table_name, Item=subscription_to_item(task_id, connection))
        self.mark_followed(task_id)

    def mark_followed(self, task_id: str) -> None:
        """Pattern 22, last step: after the subscription, so that every change from here on is
        one the notifier sees with the subscription in place (the caller reads the task after)."""
        try:
            with translated_errors():
                self._client.update_item(
                    TableName=self.table_name,
                    Key=task_key(task_id),
                    UpdateExpression="SET #followed = :yes",
                    # An update would create an expired task's item afresh.
                    ConditionExpression="attribute_exists(PK) AND attribute_not_exists(#followed)",
                    ExpressionAttributeNames={"#followed": FOLLOWED},
                    ExpressionAttributeValues={":yes": {"BOOL": True}},
                )
        except ClientError as error:
            if code(error) != CONDITION_FAILED:  # followed already, or gone: nothing to mark
                raise

    def unsubscribe(self, connection_id: str, task_id: str) -> None:
        """Pattern 23: the subscription item and the task in the connection's set."""
        self._batch_delete([subscription_key(task_id, connection_id)])
        self._forget_task(connection_id, task_id)

    def subscribers(self, task_id: str) -> list[str]:
        """Pattern 24: the connections following a task (one Query of its SUBS partition)."""
        return list(self.subscriber_ends(task_id))

    def subscriber_ends(self, task_id: str) -> dict[str, int]:
        """Pattern 24, with when each subscriber's connection ends (its token's expiry, or
        API Gateway's limit): connection id -> epoch seconds."""
        found: dict[str, int] = {}
        start: Any = None
        while True:
            request: dict[str, Any] = {
                "TableName": self.table_name,
                "KeyConditionExpression": "PK = :subs",
                "ExpressionAttributeValues": {":subs": {"S": subscriptions_partition(task_id)}},
                "ProjectionExpression": "connection_id, #ends",
                "ExpressionAttributeNames": {"#ends": TTL},
                "ConsistentRead": True,
            }
            if start is not None:
                request["ExclusiveStartKey"] = start
            with translated_errors():
                page = self._client.query(**request)
            for item in page.get("Items", []):
                ends = item.get(TTL, {}).get("N")
                found[item["connection_id"]["S"]] = int(ends) if ends is not None else 2**62
            start = page.get("LastEvaluatedKey")
            if start is None:
                return found

    def end_subscriptions(self, task_id: str, connection_ids: list[str]) -> None:
        """Pattern 23 for every subscriber: a finished task is followed no more."""
        self._batch_delete([subscription_key(task_id, c) for c in connection_ids])
        for connection_id in connection_ids:
            self._forget_task(connection_id, task_id)

    def delete_connection(
        self, connection_id: str, *also_tasks: str, expires_s: int | None = None
    ) -> Connection | None:
        """Pattern 25: the connection, the subscription items of the tasks it followed (and of
        `also_tasks`, a subscription it may not list) and its expiry item (the one of
        `expires_s` too, when the connection item may be gone). Returns what was deleted."""
        with translated_errors():
            deleted = self._client.delete_item(
                TableName=self.table_name, Key=connection_key(connection_id), ReturnValues="ALL_OLD"
            )
        old = deleted.get("Attributes")
        connection = None if not old else connection_from_item(old)
        tasks = set(also_tasks) | set(connection.tasks if connection else ())
        keys = [subscription_key(task_id, connection_id) for task_id in sorted(tasks)]
        ends = set() if expires_s is None else {expires_s}
        if connection is not None and ends_with_token(connection):
            ends.add(connection.expires_at)
        keys += [connection_expiry_key(connection_id, end) for end in sorted(ends)]
        self._batch_delete(keys)
        return connection

    def expired(self, now_s: int, limit: int) -> list[tuple[str, int]]:
        """Pattern 25a: (connection id, expiry) of the connections whose token expired at or
        before `now_s`, earliest first, at most `limit`: a Query of each hour one can still be
        open in. A connection opens before its token expires and API Gateway ends it two hours
        after it opened, so one that expired over two hours ago is closed already."""
        found: list[tuple[str, int]] = []
        first = (now_s - API_GATEWAY_LIMIT_S) // EXPIRY_BUCKET_S * EXPIRY_BUCKET_S
        for hour_s in range(first, now_s + 1, EXPIRY_BUCKET_S):
            start: Any = None
            while len(found) < limit:
                request: dict[str, Any] = {
                    "TableName": self.table_name,
                    "KeyConditionExpression": "PK = :hour AND SK < :after",
                    "ExpressionAttributeValues": {
                        ":hour": {"S": connection_expiry_partition(hour_s)},
                        ":after": {"S": f"{now_s + 1:010d}"},
                    },
                    "ProjectionExpression": "SK",
                    "Limit": limit - len(found),
                }
                if start is not None:
                    request["ExclusiveStartKey"] = start
                with translated_errors():
                    page = self._client.query(**request)
                found += [connection_expiry_of(item) for item in page.get("Items", [])]
                start = page.get("LastEvaluatedKey")
                if start is None:
                    break
        return found[:limit]

    def _forget_task(self, connection_id: str, task_id: str) -> None:
        try:
            with translated_errors():
                self._client.update_item(
                    TableName=self.table_name,
                    Key=connection_key(connection_id),
                    UpdateExpression="DELETE tasks :task",
                    # An update would create a closed connection's item afresh.
                    ConditionExpression="attribute_exists(PK)",
                    ExpressionAttributeValues={":task": {"SS": [task_id]}},
                )
        except ClientError as error:
            if code(error) != CONDITION_FAILED:
                raise

    def _batch_delete(self, keys: list[Any]) -> None:
        self._batch_write([{"DeleteRequest": {"Key": key}} for key in keys])

    def _batch_write(self, writes: list[WriteRequestTypeDef]) -> None:
        for start in range(0, len(writes), _BATCH_WRITE_LIMIT):
            requests = writes[start : start + _BATCH_WRITE_LIMIT]
            for attempt in range(_UNPROCESSED_RETRIES):
                with translated_errors():
                    answer = self._client.batch_write_item(RequestItems={self.table_name: requests})
                requests = cast(
                    "list[WriteRequestTypeDef]", answer.get("UnprocessedItems", {}).get(self.table_name, [])
                )
                if not requests:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                raise UnavailableError(BUSY)

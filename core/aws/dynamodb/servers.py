"""Servers in the table, each its own partition: patterns 10-13 of the access-pattern table."""

from __future__ import annotations

from collections.abc import Mapping
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb._requests import CONDITION_FAILED, DynamoTable, code, translated_errors
from core.aws.dynamodb.items import check_fields, field_values, server_from_item, server_to_item
from core.aws.dynamodb.keys import FLEET, KEY_ATTRIBUTES, server_key
from core.domain.models import Server
from core.ports.storage import ServerStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef

# BatchGetItem reads up to 100 keys a request.
_BATCH_GET_LIMIT = 100


class DynamoServerStore(DynamoTable, ServerStore):
    def put_server(self, server: Server) -> None:
        """Pattern 10."""
        self._put_new(server_to_item(server))

    def get_server(self, server_id: str) -> Server | None:
        """Pattern 11."""
        item = self._get(server_key(server_id))
        return None if item is None else server_from_item(item)

    def list_servers(self) -> list[Server]:
        """Pattern 12: the fleet's keys from ByQueue, then the servers, read consistently. The
        index lags a registration or deletion by a moment; a server deleted meanwhile is not
        read, so it is not listed."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": "ByQueue",
            "KeyConditionExpression": "GSI5PK = :fleet",
            "ExpressionAttributeValues": {":fleet": {"S": FLEET}},
        }
        keys = [{name: entry[name] for name in KEY_ATTRIBUTES} for entry in self._query(request)]
        items = [
            item
            for start in range(0, len(keys), _BATCH_GET_LIMIT)
            for item in self._batch_get(keys[start : start + _BATCH_GET_LIMIT], consistent=True)
        ]
        return sorted((server_from_item(item) for item in items), key=lambda server: server.id)

    def update_server(self, server_id: str, changes: Mapping[str, Any], *, version: int) -> Server:
        """Pattern 11: optimistic lock on `version`."""
        check_fields(Server, changes)
        if {"active_tasks", "version", "id"} & changes.keys():
            raise ValueError("update_server never changes id, active_tasks or version")
        update = Expression()
        for name, value in field_values(changes).items():
            update.assign(name, value)
        version_name = update.name("version")
        update.set(f"{version_name} = {version_name} + {update.value(1)}")
        update.equals("version", version)
        return self._update_or_stale(server_key(server_id), update, server_from_item)

    def delete_server(self, server_id: str) -> Server | None:
        """Pattern 11."""
        with translated_errors():
            response = self._client.delete_item(
                TableName=self.table_name, Key=server_key(server_id), ReturnValues="ALL_OLD"
            )
        old = response.get("Attributes")
        return None if old is None else server_from_item(old)

    def set_active_tasks(
        self, server_id: str, value: int, *, expected: int, last_claim_at: int | EllipsisType | None = ...
    ) -> bool:
        """Pattern 13."""
        update = Expression()
        update.assign("active_tasks", value)
        update.equals("active_tasks", expected)
        if last_claim_at is not ...:
            update.equals("last_claim_at", last_claim_at)
        with translated_errors():
            try:
                self._client.update_item(
                    TableName=self.table_name, Key=server_key(server_id), **update.request()
                )
            except ClientError as error:
                if code(error) != CONDITION_FAILED:
                    raise
                return False
        return True

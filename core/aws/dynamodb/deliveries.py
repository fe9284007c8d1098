"""Webhook deliveries in the table: patterns 26-29 of the access-pattern table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb._requests import DynamoTable
from core.aws.dynamodb.items import (
    check_fields,
    delivery_from_item,
    delivery_index_attributes,
    delivery_to_item,
    field_values,
    to_value,
)
from core.aws.dynamodb.keys import DELIVERIES_DUE, HIGHEST, delivery_key, delivery_partition
from core.domain.models import DeliveryState, WebhookDelivery
from core.ports.storage import DeliveryStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef


class DynamoDeliveryStore(DynamoTable, DeliveryStore):
    def put_delivery(self, delivery: WebhookDelivery) -> None:
        """Pattern 26."""
        self._put_new(delivery_to_item(delivery))

    def deliveries_of_task(self, task_id: str) -> list[WebhookDelivery]:
        """Pattern 27."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk",
            "ExpressionAttributeValues": {":pk": {"S": delivery_partition(task_id)}},
            "ConsistentRead": True,
        }
        return [delivery_from_item(item) for item in self._query(request)]

    def due_deliveries(self, now: int, limit: int) -> list[WebhookDelivery]:
        """Pattern 28."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": "ByStatus",
            "KeyConditionExpression": "GSI2PK = :due AND GSI2SK <= :now",
            "ExpressionAttributeValues": {
                ":due": {"S": DELIVERIES_DUE},
                ":now": {"S": f"{now:013d}#{HIGHEST}"},
            },
        }
        return [delivery_from_item(item) for item in self._query(request, limit)]

    def update_delivery(
        self, delivery: WebhookDelivery, changes: Mapping[str, Any], *, due_by: int | None = None
    ) -> WebhookDelivery:
        """Pattern 29."""
        check_fields(WebhookDelivery, changes)
        if {"task_id", "round"} & changes.keys():
            raise ValueError("a delivery's task and round never change")
        written = msgspec.structs.replace(delivery, **changes)
        update = Expression()
        for name, value in field_values(changes).items():
            update.assign(name, value)
        for attribute, derived in delivery_index_attributes(msgspec.structs.asdict(written)).items():
            update.assign(attribute, None if derived is None else to_value(derived))
        update.equals("state", DeliveryState.PENDING.value)
        update.equals("attempts", delivery.attempts)
        if due_by is not None:
            update.condition(f"{update.name('next_attempt_at')} <= {update.value(due_by)}")
        return self._update_or_stale(
            delivery_key(delivery.task_id, delivery.round), update, delivery_from_item
        )

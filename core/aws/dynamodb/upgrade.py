"""One-off upgrades of an existing table's items to the current key layout (docs/DEPLOY.md,
"Upgrading"). Each is safe to run again: an item already moved is left as it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.aws.dynamodb._requests import DynamoTable, translated_errors
from core.aws.dynamodb.keys import OLD_SEQUENCES, OLD_SERVERS, fleet_index_keys, key, server_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef

    from core.aws.dynamodb.items import Item


@dataclass(frozen=True)
class ServersMoved:
    moved: int  # copied to their own partition, the old item deleted
    kept: int  # already registered under the new key: the old item deleted only
    sequences_removed: int  # old round-robin counters (the new ones start afresh)


class TableUpgrade(DynamoTable):
    def move_servers(self) -> ServersMoved:
        """Every server of the old `SERVERS` partition to its own (`SERVER#<id>`), with its
        fields as they are (slot count, token id: its service token stays valid); then the
        old round-robin counters deleted. Each server moves in one transaction: the new item
        if there is none yet, and the old one deleted."""
        moved = kept = 0
        for old in self._partition(OLD_SERVERS):
            server_id = old["id"]["S"]
            new: Item = {**old, **server_key(server_id), **fleet_index_keys(server_id)}
            old_key = key(OLD_SERVERS, old["SK"]["S"])
            put = {
                "TableName": self.table_name,
                "Item": new,
                "ConditionExpression": "attribute_not_exists(PK)",
            }
            put_reason, _ = self._transact(
                {"Put": put}, {"Delete": {"TableName": self.table_name, "Key": old_key}}
            )
            if put_reason is None:
                moved += 1
            else:  # registered again since the upgrade: that registration stands
                self._delete(old_key)
                kept += 1
        sequences = self._partition(OLD_SEQUENCES)
        for item in sequences:
            self._delete(key(OLD_SEQUENCES, item["SK"]["S"]))
        return ServersMoved(moved, kept, len(sequences))

    def _delete(self, item_key: Item) -> None:
        with translated_errors():
            self._client.delete_item(TableName=self.table_name, Key=item_key)

    def _partition(self, pk: str) -> list[Item]:
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        return self._query(request)

"""Settings and sequences in the table: patterns 14-15 of the access-pattern table."""

from __future__ import annotations

from typing import Any

import msgspec

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb._requests import DynamoTable, translated_errors
from core.aws.dynamodb.keys import sequence_key, setting_key
from core.ports.storage import SettingStore


class DynamoSettingStore(DynamoTable, SettingStore):
    def get_setting(self, name: str) -> Any | None:
        """Pattern 14."""
        item = self._get(setting_key(name))
        return None if item is None else msgspec.json.decode(item["value"]["S"])

    def put_setting(self, name: str, value: Any) -> None:
        """Pattern 14."""
        item = setting_key(name)
        item["value"] = {"S": msgspec.json.encode(value).decode()}
        with translated_errors():
            self._client.put_item(TableName=self.table_name, Item=item)

    def next_in_sequence(self, name: str) -> int:
        """Pattern 15."""
        update = Expression()
        update.add("n", 1)
        return self._add(sequence_key(name), update, "n")

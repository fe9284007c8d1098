"""Settings and sequences in the table: patterns 14-15 of the access-pattern table."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import msgspec

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb._requests import DynamoTable, translated_errors
from core.aws.dynamodb.keys import SEQUENCE_COUNTERS, sequence_key, setting_key
from core.ports.storage import SettingStore


class DynamoSettingStore(DynamoTable, SettingStore):
    sequence_counters: ClassVar[int] = SEQUENCE_COUNTERS
    # Picks a sequence's counter; a test may give an instance a seeded one.
    sequence_rng: random.Random = random.Random()

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
        """Pattern 15: a turn from one of the sequence's counters, picked at random (one item
        takes about 1,000 writes/s). Counter i counts i+1, i+2, ...: each is a whole cycle of
        its own, and their first turns differ."""
        counter = self.sequence_rng.randrange(self.sequence_counters)
        update = Expression()
        update.add("n", 1)
        return counter + self._add(sequence_key(name, counter), update, "n")

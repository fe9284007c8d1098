"""Statistics counters in the table: patterns 16 and 19 of the access-pattern table."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb._requests import DynamoTable, translated_errors
from core.aws.dynamodb.items import TTL
from core.aws.dynamodb.keys import counter_batch_key, counter_key, counters_name
from core.ports.storage import CounterStore

# A transaction holds up to 100 writes: a batch marker and 99 counter keys.
_COUNTER_BATCH_KEYS = 99
_COUNTER_BATCH_TTL_S = 2 * 86_400
_BATCH_GET_LIMIT = 100


class DynamoCounterStore(DynamoTable, CounterStore):
    def add_counters(self, key: str, increments: Mapping[str, int], *, expires_at: int) -> None:
        """Pattern 16."""
        if not increments:
            return
        if {"PK", "SK", TTL} & increments.keys():
            raise ValueError(f"counter names clash with key attributes: {sorted(increments)}")
        update = Expression()
        for name, amount in increments.items():
            update.add(name, amount)
        update.assign(TTL, expires_at)
        with translated_errors():
            self._client.update_item(TableName=self.table_name, Key=counter_key(key), **update.request())

    def add_counters_once(
        self, batch_id: str, increments: Mapping[str, Mapping[str, int]], *, expires_at: int, now_s: int
    ) -> bool:
        """Pattern 19: one transaction per 99 keys, each with a marker item that exists only
        if that part was added (TransactWriteItems' own ClientRequestToken forgets after ten
        minutes, and moto does not implement it)."""
        keys = [key for key, counts in increments.items() if counts]
        if not keys:
            return True
        added = False
        for part, start in enumerate(range(0, len(keys), _COUNTER_BATCH_KEYS)):
            marker = Expression()
            marker.assign(TTL, now_s + _COUNTER_BATCH_TTL_S)
            # TTL deletes lazily: an expired marker counts as gone.
            marker.condition(f"attribute_not_exists(PK) OR {marker.name(TTL)} <= {marker.value(now_s)}")
            writes = [self._update(counter_batch_key(f"{batch_id}#{part}"), marker)]
            for key in keys[start : start + _COUNTER_BATCH_KEYS]:
                if {"PK", "SK", TTL} & increments[key].keys():
                    raise ValueError(f"counter names clash with key attributes: {sorted(increments[key])}")
                update = Expression()
                for name, amount in increments[key].items():
                    update.add(name, amount)
                update.assign(TTL, expires_at)
                writes.append(self._update(counter_key(key), update))
            marker_reason, *_ = self._transact(*writes)
            added = added or marker_reason is None
        return added

    def get_counters(self, keys: Collection[str]) -> dict[str, dict[str, int]]:
        """Pattern 16: BatchGetItem, 100 keys a request."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, dict[str, int]] = {}
        for start in range(0, len(unique), _BATCH_GET_LIMIT):
            chunk = [counter_key(k) for k in unique[start : start + _BATCH_GET_LIMIT]]
            for item in self._batch_get(chunk):
                found[counters_name(item)] = {
                    name: int(value["N"]) for name, value in item.items() if name not in ("PK", "SK", TTL)
                }
        return found

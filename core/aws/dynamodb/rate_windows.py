"""Rate windows in the table: pattern 17 of the access-pattern table."""

from __future__ import annotations

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb._requests import DynamoTable
from core.aws.dynamodb.items import TTL
from core.aws.dynamodb.keys import rate_key
from core.ports.storage import RateWindowStore


class DynamoRateWindowStore(DynamoTable, RateWindowStore):
    def hit_rate_window(self, key: str, *, expires_at: int, amount: int = 1) -> int:
        """Pattern 17."""
        update = Expression()
        update.add("hits", amount)
        update.assign(TTL, expires_at)
        return self._add(rate_key(key), update, "hits")

    def rate_window_hits(self, key: str) -> int:
        """Pattern 17, read: a closed window's count (consistent: others wrote it)."""
        item = self._get(rate_key(key))
        hits = (item or {}).get("hits", {}).get("N")
        return 0 if hits is None else int(hits)

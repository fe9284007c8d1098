"""Settings, sequences and statistics counters: small shared values, each updated atomically."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

__all__ = ["CounterStore", "SettingStore"]


class SettingStore(ABC):
    """Named settings (the balancing algorithm, ...) and shared sequences (round robin)."""

    # How many counters a sequence is spread over (DynamoDB: one item takes about 1,000
    # writes/s). With one, turns are exact.
    sequence_counters: ClassVar[int] = 1

    @abstractmethod
    def get_setting(self, name: str) -> Any | None: ...

    @abstractmethod
    def put_setting(self, name: str, value: Any) -> None: ...

    @abstractmethod
    def next_in_sequence(self, name: str) -> int:
        """The next turn of a shared sequence. With one counter: 1, 2, 3, ..., each once. With
        `sequence_counters` of them, a turn comes from one counter, each counting on from its
        own start (1, 2, 3, ... with an offset below the count of counters): any `turn % n`
        still cycles through every residue, each within that count of even."""


class CounterStore(ABC):
    """What the statistics service needs: buckets of named counters."""

    @abstractmethod
    def add_counters(self, key: str, increments: Mapping[str, int], *, expires_at: int) -> None:
        """Atomically add to named counters under `key` (statistics buckets)."""

    @abstractmethod
    def add_counters_once(
        self, batch_id: str, increments: Mapping[str, Mapping[str, int]], *, expires_at: int, now_s: int
    ) -> bool:
        """Add `increments` (key -> {name: amount}) unless a batch with `batch_id` was added
        in the last two days: True if added (or nothing to add), False if it had been. A
        DynamoDB Streams consumer retried on the same records counts them once."""

    @abstractmethod
    def get_counters(self, keys: Collection[str]) -> dict[str, dict[str, int]]:
        """key -> {name: value} for the keys that exist."""

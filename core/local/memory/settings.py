"""Settings and sequences in memory."""

from __future__ import annotations

from typing import Any

import msgspec

from core.local.memory._data import MemoryBase, encode
from core.ports.storage import SettingStore


class MemorySettingStore(MemoryBase, SettingStore):
    def get_setting(self, name: str) -> Any | None:
        with self._lock:
            value = self.data.settings.get(name)
        return None if value is None else msgspec.json.decode(value)

    def put_setting(self, name: str, value: Any) -> None:
        encoded = encode(value)
        with self._lock:
            self.data.settings[name] = encoded

    def next_in_sequence(self, name: str) -> int:
        with self._lock:
            n = self.data.sequences[name] = self.data.sequences.get(name, 0) + 1
            return n

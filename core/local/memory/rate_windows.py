"""Rate windows in memory."""

from __future__ import annotations

from core.local.memory._data import MemoryBase, RateWindow
from core.ports.storage import RateWindowStore


class MemoryRateWindowStore(MemoryBase, RateWindowStore):
    def hit_rate_window(self, key: str, *, expires_at: int, amount: int = 1) -> int:
        with self._lock:
            window = self.data.rate_windows.setdefault(key, RateWindow(hits=0, expires_at=expires_at))
            window.hits += amount
            return window.hits

    def rate_window_hits(self, key: str) -> int:
        with self._lock:
            window = self.data.rate_windows.get(key)
            return 0 if window is None else window.hits

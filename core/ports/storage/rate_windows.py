"""Rate windows: one atomic hit count per (caller, window)."""

from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["RateWindowStore"]


class RateWindowStore(ABC):
    """What the rate limiter needs."""

    @abstractmethod
    def hit_rate_window(self, key: str, *, expires_at: int, amount: int = 1) -> int:
        """Count one request in the window `key`; return the count including this one.
        (`amount=-1` takes back a request that was refused.)"""

    @abstractmethod
    def rate_window_hits(self, key: str) -> int:
        """The count of the window `key` (0 if it has none): a closed window, read once."""

"""Rate windows: one atomic hit count per (caller, window)."""

from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["RateWindowStore"]


class RateWindowStore(ABC):
    """What the rate limiter needs."""

    @abstractmethod
    def hit_rate_window(self, key: str, *, expires_at: int) -> int:
        """Count one request in the window `key`; return the count including this one."""

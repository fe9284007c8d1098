"""Rate-limit leases: how one process counts a busy principal's hits in blocks.

The first hit of a (principal, bucket, window) key in a process takes 1 from the shared
window, as every hit once did. When the process keeps getting hits for that key in that
window, it takes a growing block (2, 4, 8 ... capped at `lease_cap(limit)`) in ONE atomic
ADD, and serves the next hits from the unused part without a store request. Leased hits are
counted in the shared window up front, so all instances together never admit more than the
limit; the price is that a block's unused hits count against the client until its window
slides out: at most `lease_cap(limit) - 1` per process per window.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

# Above this many keys the table is emptied (a key lives one window; this bounds memory).
_MAX_KEYS = 10_000
# A block is at most this fraction of the limit (so limits under 40 never lease ahead).
_CAP_DIVISOR = 20


def lease_cap(limit: int) -> int:
    """The largest block a process takes at once for a bucket with this limit."""
    return max(1, limit // _CAP_DIVISOR)


@dataclass
class _Lease:
    window: int
    # The window's shared count as of this process's last ADD (its own blocks included).
    seen: int
    # Hits leased by this process and not served yet.
    left: int
    # The block the next ADD asks for.
    next_block: int
    # A thread of this process is taking a block now.
    leasing: bool = False


@dataclass(frozen=True)
class Taken:
    """A hit served from a lease: the window's count with it, as this process knows it (the
    shared count last seen, less what this process leased and has not served)."""

    count: int


class RateLeases:
    """One process's leases, by (principal, bucket); safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, _Lease] = {}

    def take(self, lease_key: str, window: int) -> Taken | None:
        """Serve one hit from this process's lease on `window`, if any is left."""
        with self._lock:
            lease = self._leases.get(lease_key)
            if lease is None or lease.window != window or lease.left <= 0:
                return None
            lease.left -= 1
            return Taken(lease.seen - lease.left)

    def block(self, lease_key: str, window: int, limit: int, room: int) -> tuple[int, bool]:
        """How many hits the next ADD for `window` should ask for, and whether it leads (takes
        a block for the process): 1 for the key's first in this process and window, then
        growing up to the cap, never more than the room left under the limit as last seen (at
        least 1: others may have given hits back). While one thread's block is being taken,
        the others' ADDs are single hits, so a process holds at most one unused block."""
        with self._lock:
            lease = self._leases.get(lease_key)
            if lease is None or lease.window != window:
                if len(self._leases) >= _MAX_KEYS:
                    self._leases.clear()
                lease = self._leases[lease_key] = _Lease(window, seen=0, left=0, next_block=1)
            if lease.leasing:
                return 1, False
            lease.leasing = True
            return max(1, min(lease.next_block, lease_cap(limit), room - lease.seen)), True

    def done(self, lease_key: str, window: int) -> None:
        """The leading ADD is over (granted, refused or failed): the next may lead."""
        with self._lock:
            lease = self._leases.get(lease_key)
            if lease is not None and lease.window == window:
                lease.leasing = False

    def granted(
        self, lease_key: str, window: int, limit: int, count: int, granted: int, leading: bool
    ) -> Taken:
        """Record an ADD that left the window's shared count at `count` and kept `granted`
        hits for this process (at least 1); one of them is served now."""
        with self._lock:
            lease = self._leases.get(lease_key)
            if lease is None or lease.window != window:  # the table was emptied meanwhile
                lease = self._leases[lease_key] = _Lease(window, seen=0, left=0, next_block=1)
            # Single hits of other threads may land meanwhile: every hit is counted in the
            # store, so unused ones add up and the newest count is kept.
            lease.seen = max(lease.seen, count)
            lease.left += granted - 1
            if leading:
                lease.next_block = min(lease_cap(limit), lease.next_block * 2)
            return Taken(lease.seen - lease.left)

    def refused(self, lease_key: str, window: int, count: int) -> None:
        """Record a refused ADD (all given back): the shared count as it then stood."""
        with self._lock:
            lease = self._leases.get(lease_key)
            if lease is not None and lease.window == window:
                lease.seen = max(lease.seen, count)

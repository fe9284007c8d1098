"""Per-principal rate limits: sliding 60 s windows counted in the store, shared by every
instance.

Each request is counted in its fixed 60 s window, and the decision weighs the previous
window's count by how much of it still lies within the last 60 s (the sliding-window
counter): `previous * (1 - elapsed / 60) + current`. A client that spent its limit just
before a window edge gets nothing more just after it (fixed windows gave it the limit again:
twice the limit in a moment). The previous window is closed, so its count is read once per
process and kept.

A request falls in one bucket: `service` for any request by a service principal (backends
reporting progress and heartbeats), else `task_create` for POST /api/task, `server_register`
for POST /api/servers, and `default` for the rest. Each bucket has its own counter per
principal and window: `<sub>#<bucket>#<epoch seconds // 60>`, which expires a window after
its own ends, while it still weighs on the next (DynamoDB by TTL, SQLite by `purge_expired`).

A process serving many requests of one principal counts them in leased blocks, one ADD each
(core.services.rate_leases): every served request is in the shared count before it is served,
so instances together never pass the limit; a block's unused hits count against the client.

A limit of 0 (or less) turns its bucket off: nothing is written to the store and `check` returns None,
so the response carries no X-RateLimit headers (there is no limit to describe).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal

from core.config import RateLimits
from core.domain.auth import Principal
from core.errors import RateLimitedError
from core.services import rate_leases
from core.services.context import Context

WINDOW_S = 60

Bucket = Literal["task_create", "server_register", "service", "default"]

_DESCRIPTIONS: dict[Bucket, str] = {
    "task_create": "task creation",
    "server_register": "server registration",
    "service": "service requests",
    "default": "API requests",
}


@dataclass(frozen=True)
class RateDecision:
    limit: int
    remaining: int
    # When the window ends, in epoch seconds.
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }


class RateLimitExceededError(RateLimitedError):
    """A RateLimitedError (429) that keeps the decision, for the response's headers."""

    def __init__(self, details: str, retry_after_s: int, decision: RateDecision) -> None:
        super().__init__(details, retry_after_s)
        self.decision = decision


def bucket_for(method: str, path: str, principal: Principal) -> Bucket:
    """The bucket of a request, given its route's path template (e.g. "/api/task/{id}")."""
    if principal.is_service:
        return "service"
    if method == "POST" and path == "/api/task":
        return "task_create"
    if method == "POST" and path == "/api/servers":
        return "server_register"
    return "default"


def limit_for(limits: RateLimits, bucket: Bucket) -> int:
    return {
        "task_create": limits.task_create,
        "server_register": limits.server_register,
        "service": limits.service,
        "default": limits.default,
    }[bucket]


def window_key(principal: Principal, bucket: Bucket, window: int) -> str:
    # The bucket and window hold no '#', so the key reads back unambiguously from the right.
    return f"{principal.rate_key}#{bucket}#{window}"


# Closed windows' counts kept per process (a window that has ended is never counted in again).
_CLOSED_CACHE_SIZE = 10_000
_closed_lock = threading.Lock()


def _previous_count(ctx: Context, key: str) -> int:
    known = ctx.closed_rate_windows.get(key)
    if known is None:
        known = ctx.store.rate_window_hits(key)
        with _closed_lock:
            if len(ctx.closed_rate_windows) >= _CLOSED_CACHE_SIZE:
                ctx.closed_rate_windows.clear()
            ctx.closed_rate_windows[key] = known
    return known


def check(ctx: Context, principal: Principal, bucket: Bucket) -> RateDecision | None:
    """Count this request in its window; None if the bucket has no limit.

    Raises RateLimitExceededError once the sliding count is past the limit (a refused request
    is taken back out of the count). A process serving many requests of one principal counts
    them in leased blocks (core.services.rate_leases).
    """
    limit = limit_for(ctx.config.rate_limits, bucket)
    if limit <= 0:
        return None
    now_ms = ctx.now()
    window_ms = WINDOW_S * 1000
    window = now_ms // window_ms
    reset_s = (window + 1) * WINDOW_S
    lease_key = f"{principal.rate_key}#{bucket}"
    previous = _previous_count(ctx, window_key(principal, bucket, window - 1))
    elapsed = (now_ms - window * window_ms) / window_ms
    carried = previous * (1 - elapsed)
    taken = ctx.rate_leases.take(lease_key, window)
    if taken is None:
        taken = _hit(ctx, principal, bucket, limit, window, carried, elapsed, previous)
    # A leased hit fitted when it was leased, and the previous window only weighs less since.
    remaining = max(0, limit - math.ceil(carried + taken.count))
    return RateDecision(limit=limit, remaining=remaining, reset_s=reset_s)


def _room(limit: int, carried: float) -> int:
    """The largest count of the current window that keeps the sliding estimate in the limit."""
    room = math.floor(limit - carried)
    return room - 1 if carried + room > limit else room  # floating point at the boundary


def _hit(
    ctx: Context,
    principal: Principal,
    bucket: Bucket,
    limit: int,
    window: int,
    carried: float,
    elapsed: float,
    previous: int,
) -> rate_leases.Taken:
    """One ADD to the shared window: a block of hits for this process, less what does not fit
    (given back); RateLimitExceededError if not even this request fits."""
    lease_key = f"{principal.rate_key}#{bucket}"
    key = window_key(principal, bucket, window)
    reset_s = (window + 1) * WINDOW_S
    room = _room(limit, carried)
    asked, leading = ctx.rate_leases.block(lease_key, window, limit, room)
    try:
        count = ctx.store.hit_rate_window(key, expires_at=reset_s + WINDOW_S, amount=asked)
        excess = min(asked, max(0, count - room))
        if excess:
            # Not served, so not counted: a client retrying too early is not locked out longer.
            ctx.store.hit_rate_window(key, expires_at=reset_s + WINDOW_S, amount=-excess)
            count -= excess
        if excess == asked:
            ctx.rate_leases.refused(lease_key, window, count)
            retry_after_s = _retry_after_s(limit, previous, count, elapsed)
            raise RateLimitExceededError(
                f"Rate limit of {limit} requests per minute exceeded for {_DESCRIPTIONS[bucket]};"
                f" retry after {retry_after_s} s",
                retry_after_s,
                RateDecision(limit=limit, remaining=0, reset_s=reset_s),
            )
        return ctx.rate_leases.granted(lease_key, window, limit, count, asked - excess, leading)
    finally:
        if leading:
            ctx.rate_leases.done(lease_key, window)


def _retry_after_s(limit: int, previous: int, count: int, elapsed: float) -> int:
    """Whole seconds (at least 1) until one more request fits, if no other comes meanwhile."""
    if count + 1 <= limit:  # in this window, once enough of the previous one has slid out
        fraction = 1 - (limit - count - 1) / previous if previous else elapsed
        wait = (fraction - elapsed) * WINDOW_S
    else:  # in the next window, once enough of this one has slid out
        fraction = 1 - (limit - 1) / count
        wait = (1 - elapsed + fraction) * WINDOW_S
    return max(1, math.ceil(wait - 1e-9))

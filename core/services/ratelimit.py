"""Per-principal rate limits: fixed 60 s windows counted in the store, shared by every
instance.

A request falls in one bucket: `service` for any request by a service principal (backends
reporting progress and heartbeats), else `task_create` for POST /api/task, `server_register`
for POST /api/servers, and `default` for the rest. Each bucket has its own counter per
principal and window: `<sub>#<bucket>#<epoch seconds // 60>`, which expires when the window
ends (DynamoDB by TTL, SQLite by `purge_expired`).

A limit of 0 (or less) turns its bucket off: nothing is written to the store and `check` returns None,
so the response carries no X-RateLimit headers (there is no limit to describe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.config import RateLimits
from core.domain.auth import Principal
from core.errors import RateLimitedError
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


def check(ctx: Context, principal: Principal, bucket: Bucket) -> RateDecision | None:
    """Count this request in its window; None if the bucket has no limit.

    Raises RateLimitExceededError once the window's count is past the limit (those requests
    are counted too, which changes nothing: the window is already full).
    """
    limit = limit_for(ctx.config.rate_limits, bucket)
    if limit <= 0:
        return None
    now_ms = ctx.now()
    window = now_ms // (WINDOW_S * 1000)
    reset_s = (window + 1) * WINDOW_S
    count = ctx.store.hit_rate_window(window_key(principal, bucket, window), expires_at=reset_s)
    decision = RateDecision(limit=limit, remaining=max(0, limit - count), reset_s=reset_s)
    if count > limit:
        # Whole seconds, rounded up, so a client that waits this long is in the next window.
        retry_after_s = -(-(reset_s * 1000 - now_ms) // 1000)
        raise RateLimitExceededError(
            f"Rate limit of {limit} requests per minute exceeded for {_DESCRIPTIONS[bucket]};"
            f" retry after {retry_after_s} s",
            retry_after_s,
            decision,
        )
    return decision

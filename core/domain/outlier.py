"""Passive outlier detection, in the manner of Envoy's: what dispatch learns from the answers
of the backends themselves, beside the active health checks.

A failed attempt (a connection error, a timeout or a 5xx other than busy) adds one to the
server's `outlier_failures`; an attempt that the backend finished (a result or its own error)
sets it back to 0. At `consecutive_failures` in a row the server is ejected from selection for
`base_ejection_ms` times the number of its recent ejections, capped at `max_ejection_ms`; the
count of recent ejections drops by one for every `base_ejection_ms` spent back in selection.
When the ejection ends, or when health checks bring an unhealthy server back online, the server
gets a slow start: a share of its slots that grows linearly over `slow_start_ms`.

Pure functions over `Server` values and a time: the state lives in the server's item, so every
dispatcher (every Lambda container) sees the same ejections.
"""

from __future__ import annotations

import math
from typing import Any

from core.config import OutlierPolicy
from core.domain.models import Server

__all__ = ["OutlierPolicy", "ejection", "is_ejected", "should_eject", "slot_limit"]


def is_ejected(server: Server, now: int) -> bool:
    return server.ejected_until is not None and now < server.ejected_until


def slot_limit(server: Server, now: int, policy: OutlierPolicy) -> int:
    """How many slots selection may fill on `server` now: 0 while ejected, a growing share
    during its slow start, else all of them."""
    if is_ejected(server, now):
        return 0
    start = server.slow_start_from
    if start is None or policy.slow_start_ms <= 0 or now >= start + policy.slow_start_ms:
        return server.max_concurrent
    if now < start:
        return 0
    share = (now - start) / policy.slow_start_ms
    return max(1, min(server.max_concurrent, math.ceil(server.max_concurrent * share)))


def should_eject(
    server: Server, now: int, policy: OutlierPolicy, *, ejected_now: int, fleet_size: int
) -> bool:
    """Whether `server`, as just read after a failed attempt, is to be ejected now.
    `ejected_now` counts the fleet's servers ejected at the moment (`fleet_size` in all)."""
    if not policy.enabled or is_ejected(server, now):
        return False
    if server.outlier_failures < policy.consecutive_failures:
        return False
    allowed = max(1, fleet_size * policy.max_ejection_percent // 100)
    return ejected_now < allowed


def ejection(server: Server, now: int, policy: OutlierPolicy) -> dict[str, Any]:
    """The changes that eject `server` at `now`."""
    recent = server.ejections
    if server.ejected_until is not None and policy.base_ejection_ms > 0:
        # A server that stayed in selection long enough is forgiven its earlier ejections.
        recent = max(0, recent - (now - server.ejected_until) // policy.base_ejection_ms)
    count = recent + 1
    until = now + min(policy.max_ejection_ms, policy.base_ejection_ms * count)
    return {"ejections": count, "ejected_until": until, "slow_start_from": until, "outlier_failures": 0}

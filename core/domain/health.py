"""Server health: heartbeats (push) and active checks (pull) feed one small state machine.

degraded after 1 failure, offline after 3 in a row, online again after 2 successes in a row.
Maintenance is an operator's decision: observations are recorded but never change it.
"""

from __future__ import annotations

from typing import Any

from core.domain.models import Server, ServerStatus

DEGRADED_AFTER = 1
OFFLINE_AFTER = 3
ONLINE_AFTER = 2


def status_for(server: Server, failures: int, successes: int) -> ServerStatus:
    if server.status is ServerStatus.MAINTENANCE:
        return ServerStatus.MAINTENANCE
    if failures >= OFFLINE_AFTER:
        return ServerStatus.OFFLINE
    if failures and server.status is ServerStatus.OFFLINE:
        # Offline for silence (its failure count untouched): a failed check is no way back.
        return ServerStatus.OFFLINE
    if failures >= DEGRADED_AFTER:
        return ServerStatus.DEGRADED
    if server.status is ServerStatus.ONLINE or successes >= ONLINE_AFTER:
        return ServerStatus.ONLINE
    return server.status


def observe(server: Server, healthy: bool, now: int, *, heartbeat: bool) -> dict[str, Any]:
    """The changes one observation makes to `server`."""
    failures = 0 if healthy else server.consecutive_failures + 1
    successes = server.consecutive_successes + 1 if healthy else 0
    changes: dict[str, Any] = {
        "health_status": "healthy" if healthy else "unhealthy",
        "consecutive_failures": failures,
        "consecutive_successes": successes,
        "status": status_for(server, failures, successes),
    }
    changes["last_heartbeat" if heartbeat else "last_check_at"] = now
    if changes["status"] is ServerStatus.ONLINE and server.status in (
        ServerStatus.OFFLINE,
        ServerStatus.DEGRADED,
    ):
        changes["slow_start_from"] = now  # back from unhealthy: a share of its slots at first
    if healthy:
        changes["last_healthy_at"] = now
    return changes


def last_sign_of_life(server: Server) -> int:
    """The last healthy observation, or the registration (a new server gets its first check)."""
    return max(server.registered_at, server.last_healthy_at or 0)


def status_after_maintenance(server: Server) -> ServerStatus:
    """Leaving maintenance: back to what the last observations say."""
    if server.consecutive_failures >= OFFLINE_AFTER:
        return ServerStatus.OFFLINE
    if server.consecutive_failures >= DEGRADED_AFTER:
        return ServerStatus.DEGRADED
    return ServerStatus.ONLINE

"""Passive outlier detection: eject a server whose attempts keep failing (the policy is in
core/domain/outlier.py).

The run of failures is counted in the write that frees the failed attempt's slot
(`tasks.requeue`); here, after that write, the server is read once and ejected by a
conditional write on its version, so of two dispatchers that see the threshold reached at once
only one ejects it, on either deployment. Only the failure path pays this read.
"""

from __future__ import annotations

import logging
from typing import Any

from core.domain import outlier
from core.domain.models import Server
from core.errors import ConflictError, NotFoundError
from core.services import servers, stats
from core.services.context import Context

log = logging.getLogger(__name__)


def after_failure(ctx: Context, server_id: str) -> Server | None:
    """Eject `server_id` if its failures in a row reached the threshold. Returns the server
    as ejected, or None when it was not (below the threshold, already ejected, too many
    ejected already, gone). Best effort: a failure here must not lose the task's requeue."""
    policy = ctx.config.outlier
    if not policy.enabled:
        return None
    try:
        server = ctx.store.get_server(server_id)
        if server is None:
            return None
        now = ctx.now()
        fleet = ctx.fleet.servers()
        ejected_now = sum(1 for s in fleet if s.id != server_id and outlier.is_ejected(s, now))
        if not outlier.should_eject(server, now, policy, ejected_now=ejected_now, fleet_size=len(fleet)):
            return None

        made: list[bool] = []  # whether the write that won was this ejection

        def changes(current: Server) -> dict[str, Any]:
            eject = outlier.should_eject(current, now, policy, ejected_now=ejected_now, fleet_size=len(fleet))
            made[:] = [eject]
            return outlier.ejection(current, now, policy) if eject else {}

        ejected = servers.update_server(ctx, server, changes)
    except (ConflictError, NotFoundError):
        return None
    except Exception:
        log.exception("outlier detection failed", extra={"server_id": server_id})
        return None
    if not made or not made[0]:
        return None  # another dispatcher ejected it first, or a success ended the run meanwhile
    # An ejection counts as an unhealthy observation in the server's daily uptime.
    stats.record_health(ctx.store, server_id, False, now)
    log.warning(
        "server %s ejected for %d ms after %d failed attempts in a row (ejection %d)",
        server_id,
        (ejected.ejected_until or now) - now,
        policy.consecutive_failures,
        ejected.ejections,
    )
    return ejected

"""The sweeper: the periodic repairs that make every task end somewhere known.

Each step reads an index (never the whole table), so its cost follows the work due, not the
number of tasks stored: execution timeouts, queue timeouts, silent servers, tasks left on
offline servers, slot counts, and a nudge for PENDING tasks whose wake-up was lost. Active
health checks need HTTP; `due_for_check` says which servers, the runtime calls them and
`servers.record_check` records the answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.domain import balancer, health
from core.domain.models import Server, ServerStatus, TaskStatus
from core.errors import StaleWriteError, UnavailableError
from core.ports.connections import ExpiringConnections
from core.services import servers, tasks
from core.services.context import Context

log = logging.getLogger(__name__)

BATCH = 500
# Connections closed per sweep (each is an API Gateway call and two writes, one after another):
# more expiring within one minute wait for the next sweeps.
CONNECTION_BATCH = 100


@dataclass
class SweepReport:
    timed_out: int = 0
    queue_timeouts: int = 0
    silent_servers: int = 0
    orphans_requeued: int = 0
    slots_reconciled: int = 0
    owner_counts_reconciled: int = 0
    pending_nudged: bool = False
    purged: int = 0
    # WebSocket connections closed because their token expired (AWS).
    connections_closed: int = 0
    # Filled by the AWS runtime, which sends due webhooks after the sweep.
    webhooks_sent: int = 0


def sweep(ctx: Context) -> SweepReport:
    report = SweepReport()
    now = ctx.now()
    report.timed_out = _execution_timeouts(ctx, now)
    fleet = ctx.store.list_servers()
    report.queue_timeouts = _queue_timeouts(ctx, fleet, now)
    for server in fleet:
        if _silent(ctx, server, now) and servers.mark_silent(ctx, server) is not None:
            report.silent_servers += 1
    fleet = ctx.store.list_servers()
    report.owner_counts_reconciled = reconcile_owner_counts(ctx, fleet, now)
    for server in fleet:
        if server.status is ServerStatus.OFFLINE:
            # Normally done when it went offline; this catches a crash in between.
            report.orphans_requeued += servers.requeue_server_tasks(
                ctx, server.id, f"Server {server.id} is offline"
            )
        elif reconcile_slots(ctx, server, now):
            report.slots_reconciled += 1
    if ctx.store.count_pending():
        ctx.queue.capacity_changed()
        report.pending_nudged = True
    report.purged = ctx.store.purge_expired(now // 1000)
    ctx.fleet.invalidate()
    return report


def close_expired_connections(connections: ExpiringConnections, now: int) -> int:
    """Close the WebSocket connections whose token has expired. One that cannot be closed
    now stays listed for the next sweep; the others are closed meanwhile."""
    closed = 0
    for connection_id, expires_s in connections.expired(now // 1000, CONNECTION_BATCH):
        try:
            connections.close_expired(connection_id, expires_s)
        except UnavailableError as exc:
            log.warning("could not close expired connection %s: %s", connection_id, exc)
            continue
        closed += 1
    return closed


def _silent(ctx: Context, server: Server, now: int) -> bool:
    """No heartbeat and no healthy check for HEARTBEAT_TIMEOUT."""
    if server.status in (ServerStatus.OFFLINE, ServerStatus.MAINTENANCE):
        return False
    return now - health.last_sign_of_life(server) > ctx.config.heartbeat_timeout_ms


def _execution_timeouts(ctx: Context, now: int) -> int:
    count = 0
    for task in ctx.store.processing_due(now, BATCH):
        limit = task.timeout_ms or ctx.config.task_timeout_ms
        reason = (
            f"Timed out after {limit} ms on server {task.server_id}"
            f" (attempt {task.attempts} of {task.attempt_limit})"
        )
        try:
            tasks.time_out(ctx, task, reason)
            count += 1
        except StaleWriteError:
            continue  # it finished meanwhile
    return count


def _queue_timeouts(ctx: Context, fleet: list[Server], now: int) -> int:
    """Only the tasks that are due are read (an index by queued_at)."""
    cutoff = now - ctx.config.queue_timeout_ms
    count = 0
    for task in ctx.store.pending_queued_before(cutoff, BATCH):
        reason = (
            f"No server took the task within {ctx.config.queue_timeout_ms} ms:"
            f" {balancer.why_waiting(fleet, task)}"
        )
        try:
            tasks.expire_pending(ctx, task, reason)
            count += 1
        except StaleWriteError:
            continue
    return count


# Every task PROCESSING is read to recount the owners' tasks in flight (only when the cheap
# check below fails): at most the fleet's slots.
_PROCESSING_READ = 100_000
_NO_DEADLINE = 9_999_999_999_999


def reconcile_owner_counts(ctx: Context, fleet: list[Server], now: int) -> int:
    """Set each owner's count of tasks in flight to the tasks PROCESSING, if they differ. The
    counts change in the same writes as the tasks, so this repairs only what nothing else
    should break (data written before the counts existed, a hand edit). A cheap check comes
    first: the counts add up to the slots taken on the fleet. An owner whose count changed
    within RECONCILE_GRACE is left alone (an index read may not show that task yet)."""
    recorded = ctx.store.in_flight_by_owner()
    if (
        sum(recorded.values()) == sum(s.active_tasks for s in fleet)
        and min(recorded.values(), default=0) >= 0
    ):
        return 0
    actual: dict[str, int] = {}
    for task in ctx.store.processing_due(_NO_DEADLINE, _PROCESSING_READ):
        actual[task.owner] = actual.get(task.owner, 0) + 1
    fixed = 0
    quiet_since = now - ctx.config.reconcile_grace_ms
    for owner in recorded.keys() | actual.keys():
        have, want = recorded.get(owner, 0), actual.get(owner, 0)
        if have != want and ctx.store.set_in_flight(owner, want, expected=have, quiet_since=quiet_since):
            log.warning("reconciled tasks in flight of owner %s from %d to %d", owner, have, want)
            fixed += 1
    if fixed:
        ctx.queue.capacity_changed()
    return fixed


def reconcile_slots(ctx: Context, server: Server, now: int) -> bool:
    """Set the slot count to the tasks PROCESSING there, if they differ. Claims take the slot
    and the task in one write, so this only repairs what nothing else should break; a server
    claimed on recently is left alone (an index may not show that task yet)."""
    if server.last_claim_at is not None and now - server.last_claim_at < ctx.config.reconcile_grace_ms:
        return False
    listed = ctx.store.processing_on_server(server.id)
    if len(listed) == server.active_tasks:
        return False
    # Confirm each against the task itself: an index entry may be stale.
    running = 0
    for task in listed:
        current = ctx.store.get_task(task.id)
        if current is not None and current.status is TaskStatus.PROCESSING and current.server_id == server.id:
            running += 1
    if running == server.active_tasks:
        return False
    # The count may have gone up and back down since `server` was read (a claim, then its
    # release): a claim meanwhile changed last_claim_at, and then nothing is set.
    fixed = ctx.store.set_active_tasks(
        server.id, running, expected=server.active_tasks, last_claim_at=server.last_claim_at
    )
    if fixed:
        log.warning("reconciled slot count of %s from %d to %d", server.id, server.active_tasks, running)
        if running < server.active_tasks:
            ctx.queue.capacity_changed()
    return fixed


def due_for_check(ctx: Context, now: int | None = None) -> list[Server]:
    """Servers whose active health check is due (a new server's at once)."""
    now = ctx.now() if now is None else now
    interval = ctx.config.health_check_interval_ms
    return [
        s for s in ctx.store.list_servers() if s.last_check_at is None or now - s.last_check_at >= interval
    ]

"""The AWS runtime: dispatch and sweeps as blocking calls inside one Lambda invocation.

Messages on the dispatch queue say what to look at: `{"taskId": ...}` (a task was created or
requeued), `{"drain": true}` (capacity freed); both run the scheduler's selection,
`{"checkServer": ...}` (a server was registered: check its health now) or `{"webhook":
{"taskId", "round"}}` (a webhook delivery is due: one attempt, bounded by WEBHOOK_TIMEOUT). Each is idempotent,
since SQS delivers at least once: the claim is a conditional write only one caller wins.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from core.domain.models import DeliveryState, TaskStatus, WebhookDelivery
from core.domain.protocol import Kind
from core.http import backend as backend_http
from core.http import webhook as webhook_http
from core.services import dispatch, scheduler, servers, sweeper, webhook_delivery
from core.services.context import Context
from core.services.dispatch import Assignment, Attempt

if TYPE_CHECKING:
    import urllib3

log = logging.getLogger(__name__)

DRAIN_BATCH = 100
WEBHOOK_BATCH = 100
CONCURRENCY = 16


_pool: urllib3.PoolManager | None = None


def shared_pool() -> urllib3.PoolManager:
    """One connection pool per process (a Lambda container reuses it across invocations)."""
    global _pool
    if _pool is None:
        import urllib3

        _pool = urllib3.PoolManager(maxsize=CONCURRENCY, block=False)
    return _pool


def handle_message(ctx: Context, body: dict[str, Any], pool: urllib3.PoolManager) -> None:
    """One queue message. Raises (so the message is retried) only if the store failed."""
    if "taskId" in body or body.get("drain"):
        # A task queued or a slot freed: either way, start what is best now (the task a
        # message names, or its snapshot, gives it no precedence).
        drain(ctx, pool)
    elif "checkServer" in body:
        check_server(ctx, str(body["checkServer"]), pool)
    elif isinstance(body.get("webhook"), dict):
        deliver_webhook(ctx, str(body["webhook"].get("taskId")), int(body["webhook"].get("round", 0)), pool)
    else:
        log.warning("ignoring an unknown dispatch message: %s", sorted(body))


def drain(ctx: Context, pool: urllib3.PoolManager) -> int:
    """Start what can go now, best first (core/services/scheduler.py), up to DRAIN_BATCH; a full
    batch asks for another drain, so one invocation stays short."""
    # Slots were freed by other processes: this container's view of the fleet is stale.
    ctx.fleet.invalidate()
    started = scheduler.start_next(ctx, limit=DRAIN_BATCH).started
    if len(started) == DRAIN_BATCH:
        ctx.queue.capacity_changed()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as workers:
        list(workers.map(lambda a: execute(ctx, a, pool), started))
    return len(started)


def execute(ctx: Context, assignment: Assignment, pool: urllib3.PoolManager) -> None:
    """Make the predict call and record its outcome; a busy server hands over to the next."""
    attempt = Attempt()
    current: Assignment | None = assignment
    while current is not None:
        started = time.perf_counter()
        outcome = backend_http.predict_sync(pool, current.request)
        ctx.telemetry.duration("DispatchLatency", (time.perf_counter() - started) * 1000)
        task = dispatch.settle(ctx, current, outcome, attempt)
        current = None
        if outcome.kind is Kind.BUSY and task is not None and task.status is TaskStatus.PENDING:
            decision = dispatch.assign(ctx, task, attempt)
            current = decision if isinstance(decision, Assignment) else None


def check_server(ctx: Context, server_id: str, pool: urllib3.PoolManager) -> None:
    server = ctx.store.get_server(server_id)
    if server is None:
        return
    healthy, why = backend_http.health_sync(pool, server, ctx.config.health_check_timeout_ms / 1000)
    if not healthy:
        log.info("health check of %s failed: %s", server_id, why)
    servers.record_check(ctx, server_id, healthy)


def deliver_webhook(ctx: Context, task_id: str, round_: int, pool: urllib3.PoolManager) -> None:
    """A `{"webhook": ...}` message: make the attempt if it is due and nobody else has it."""
    delivery = webhook_delivery.find(ctx, task_id, round_)
    if delivery is None or delivery.state is not DeliveryState.PENDING:
        return
    wait_ms = delivery.next_attempt_at - ctx.now()
    if wait_ms > 0:  # early (SQS delays at most 15 minutes): on again
        ctx.queue.webhook_due(task_id, round_, delay_ms=wait_ms)
        return
    send_webhook(ctx, delivery, pool)


def send_webhook(ctx: Context, delivery: WebhookDelivery, pool: urllib3.PoolManager) -> bool:
    """Claim, POST and record one attempt; ask for the next one if it is to be retried."""
    claimed = webhook_delivery.claim(ctx, delivery)
    if claimed is None:
        return False
    request = webhook_delivery.request(ctx, claimed)
    if isinstance(request, webhook_delivery.WebhookOutcome):
        outcome = request
    else:
        outcome = webhook_http.send_sync(pool, request)
    settled = webhook_delivery.settle(ctx, claimed, outcome)
    if settled is not None and settled.state is DeliveryState.PENDING:
        delay = max(0, settled.next_attempt_at - ctx.now())
        ctx.queue.webhook_due(settled.task_id, settled.round, delay_ms=delay)
    return True


def sweep(ctx: Context, pool: urllib3.PoolManager) -> sweeper.SweepReport:
    """The scheduled sweep, then the health checks and webhook attempts that are due
    (concurrently; a webhook whose message was lost or delayed past SQS's limit is sent here)."""
    report = sweeper.sweep(ctx)
    due = sweeper.due_for_check(ctx)
    deliveries = ctx.store.due_deliveries(ctx.now(), WEBHOOK_BATCH)
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as workers:
        list(workers.map(lambda s: check_server(ctx, s.id, pool), due))
        report.webhooks_sent = sum(workers.map(lambda d: send_webhook(ctx, d, pool), deliveries))
    return report

"""The AWS runtime: dispatch and sweeps as blocking calls inside one Lambda invocation. The
loops themselves are core.services.work's; this module drives them with urllib3 in threads.

Messages on the dispatch queue say what to look at: `{"taskId": ...}` (a task was created or
requeued), `{"drain": true}` (capacity freed: dispatch PENDING tasks in priority order),
`{"checkServer": ...}` (a server was registered: check its health now) or `{"webhook":
{"taskId", "round"}}` (a webhook delivery is due: one attempt, bounded by WEBHOOK_TIMEOUT). Each is idempotent,
since SQS delivers at least once: the claim is a conditional write only one caller wins.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec

from core.domain.models import DeliveryState, Server, Task, WebhookDelivery
from core.domain.protocol import BackendRequest, Outcome
from core.http import blocking as backend_http
from core.http import blocking as webhook_http
from core.ports.queue import enqueue_safely
from core.services import dispatch, sweeper, webhook_delivery, work
from core.services.context import Context
from core.services.dispatch import Assignment, Waiting
from core.services.webhook_delivery import WebhookOutcome, WebhookRequest

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
    if "taskId" in body:
        snapshot = _snapshot(body)
        dispatch_task(ctx, snapshot or str(body["taskId"]), pool)
    elif body.get("drain"):
        drain(ctx, pool)
    elif "checkServer" in body:
        check_server(ctx, str(body["checkServer"]), pool)
    elif isinstance(body.get("webhook"), dict):
        deliver_webhook(ctx, str(body["webhook"].get("taskId")), int(body["webhook"].get("round", 0)), pool)
    else:
        log.warning("ignoring an unknown dispatch message: %s", sorted(body))


def _snapshot(body: dict[str, Any]) -> Task | None:
    """The task as its message's sender wrote it, if it came along and is well formed."""
    if not isinstance(body.get("task"), dict):
        return None
    try:
        task = msgspec.convert(body["task"], Task)
    except msgspec.ValidationError:
        log.warning("ignoring a malformed task snapshot", extra={"task_id": body["taskId"]})
        return None
    return task if task.id == body["taskId"] else None


class PoolTransport:
    """The blocking transport: core.http's urllib3 calls on the container's pool."""

    def __init__(self, pool: urllib3.PoolManager) -> None:
        self.pool = pool

    def predict(self, request: BackendRequest) -> Outcome:
        return backend_http.predict_sync(self.pool, request)

    def health(self, server: Server, timeout_s: float) -> tuple[bool, str | None]:
        return backend_http.health_sync(self.pool, server, timeout_s)

    def cancel(self, task: Task, server: Server) -> None:
        backend_http.cancel_sync(self.pool, task, server)

    def send_webhook(self, request: WebhookRequest) -> WebhookOutcome:
        return webhook_http.send_sync(self.pool, request)


def dispatch_task(ctx: Context, task: Task | str, pool: urllib3.PoolManager) -> None:
    task_id = task if isinstance(task, str) else task.id
    decision = dispatch.assign(ctx, task)
    if isinstance(decision, Assignment):
        execute(ctx, decision, pool)
    elif isinstance(decision, Waiting) and decision.not_before is not None:
        # Backing off: come back when it is due (a later drain may take it first).
        enqueue_safely(ctx.queue, task_id, delay_ms=max(0, decision.not_before - ctx.now()))


def drain(ctx: Context, pool: urllib3.PoolManager) -> int:
    """Dispatch PENDING tasks while capacity lasts (one batch: the message is retried, and a
    task backing off has its own delayed message)."""
    # Slots were freed by other processes: this container's view of the fleet is stale.
    ctx.fleet.invalidate()
    started: list[Assignment] = []
    try:
        work.drain(ctx, DRAIN_BATCH, started.append, max_batches=1)
    finally:
        # Tasks claimed before a store fault still get their predict call.
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as workers:
            list(workers.map(lambda a: execute(ctx, a, pool), started))
    return len(started)


def execute(ctx: Context, assignment: Assignment, pool: urllib3.PoolManager) -> None:
    # A later backoff wake-up is the requeue's delayed message: the returned time is not needed.
    work.run(work.execute(ctx, assignment), PoolTransport(pool))


def check_server(ctx: Context, server_id: str, pool: urllib3.PoolManager) -> None:
    work.run(work.check(ctx, server_id), PoolTransport(pool))


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
    return work.run(work.deliver(ctx, delivery), PoolTransport(pool))


def sweep(ctx: Context, pool: urllib3.PoolManager) -> sweeper.SweepReport:
    """The scheduled sweep, then the health checks and webhook attempts that are due
    (concurrently; a webhook whose message was lost or delayed past SQS's limit is sent here)."""
    report = sweeper.sweep(ctx)
    due = sweeper.due_for_check(ctx)
    deliveries = work.due_webhooks(ctx, WEBHOOK_BATCH)
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as workers:
        list(workers.map(lambda s: check_server(ctx, s.id, pool), due))
        report.webhooks_sent = sum(workers.map(lambda d: send_webhook(ctx, d, pool), deliveries))
    return report

"""The AWS runtime: dispatch and sweeps as blocking calls inside one Lambda invocation. The
loops themselves are core.services.work's; this module drives them with urllib3 in threads.

Messages on the dispatch queue say what to look at: `{"taskId": ...}` (a task was created or
requeued) and `{"drain": true}` (capacity freed) both run the scheduler's selection,
`{"checkServer": ...}` (a server was registered: check its health now) or `{"webhook":
{"taskId", "round"}}` (a webhook delivery is due: one attempt, bounded by WEBHOOK_TIMEOUT). Each is idempotent,
since SQS delivers at least once: the claim is a conditional write only one caller wins.

Lambda's clock: an invocation ends at its timeout, whatever it is doing. Every backend call
made here is bounded by the time the invocation has left (`Budget`), less a reserve for
recording the call's outcome: a synchronous predict that cannot answer in that time is a failed
attempt with a reason saying so (retried on the usual backoff, FAILED with that reason once the
attempts are spent), never a task left PROCESSING by a killed invocation. A message is not
started at all with less than START_MIN_S left (NotStartedError: the dispatcher hands it back).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from core.domain.models import DeliveryState, Server, Task, WebhookDelivery
from core.domain.protocol import BackendRequest, Kind, Outcome
from core.http import blocking as backend_http
from core.http import blocking as webhook_http
from core.ports.connections import ExpiringConnections
from core.services import sweeper, webhook_delivery, work
from core.services.context import Context
from core.services.dispatch import Assignment
from core.services.webhook_delivery import WebhookOutcome, WebhookRequest

if TYPE_CHECKING:
    import urllib3

log = logging.getLogger(__name__)

DRAIN_BATCH = 100
WEBHOOK_BATCH = 100
CONCURRENCY = 16
# Kept back from every backend call for what follows it: recording the outcome (a transaction
# or two, retried by botocore when throttled) and answering Lambda.
SETTLE_RESERVE_S = 3.0
# A message is not started with less than this left of the invocation (reserve included).
START_MIN_S = 8.0


class NotStartedError(Exception):
    """Too little of the invocation was left to start this message: nothing was done for it."""


class Budget:
    """What an invocation has left for backend calls: Lambda's remaining time when it began,
    less SETTLE_RESERVE_S, counted down on a monotonic clock."""

    def __init__(self, remaining_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._calls_end = clock() + remaining_ms / 1000 - SETTLE_RESERVE_S

    def left_s(self) -> float:
        return max(0.0, self._calls_end - self._clock())

    def can_start(self) -> bool:
        return self.left_s() + SETTLE_RESERVE_S >= START_MIN_S


def outlasted(left_s: float) -> Outcome:
    """The outcome of a predict call the invocation's end cut short (or left no time for)."""
    return Outcome(
        Kind.RETRY,
        error=(
            f"No answer within the {left_s:.1f} s the dispatcher's invocation had left: a synchronous"
            " backend must answer within the dispatcher's timeout; long work belongs to an"
            " asynchronous backend (202 and a callback)"
        ),
    )


_pool: urllib3.PoolManager | None = None


def shared_pool() -> urllib3.PoolManager:
    """One connection pool per process (a Lambda container reuses it across invocations)."""
    global _pool
    if _pool is None:
        import urllib3

        _pool = urllib3.PoolManager(maxsize=CONCURRENCY, block=False)
    return _pool


class DrainOnce:
    """One drain for all the `taskId`/`drain` messages of a batch. Every task they name was stored
    before the batch arrived, so one drain sees them all; ten concurrent drains would each try
    to claim the same best tasks, and every lost claim is a billed, failed transaction. The
    first caller drains; the others wait for it and share its outcome (a store fault fails them
    all, so SQS delivers each again)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._error: BaseException | None = None

    def run(self, drain_now: Callable[[], object]) -> None:
        with self._lock:
            if not self._done:
                try:
                    drain_now()
                except BaseException as exc:
                    self._error = exc
                finally:
                    self._done = True
        if self._error is not None:
            raise self._error


def handle_message(
    ctx: Context,
    body: dict[str, Any],
    pool: urllib3.PoolManager,
    budget: Budget | None = None,
    drains: DrainOnce | None = None,
) -> None:
    """One queue message. Raises (so the message is retried) only if the store failed, or
    NotStartedError if `budget` leaves too little time to start it. Messages that share
    `drains` (one batch) share one drain."""
    if budget is not None and not budget.can_start():
        raise NotStartedError(
            f"not started: {budget.left_s() + SETTLE_RESERVE_S:.1f} s left of the invocation,"
            f" under the {START_MIN_S:.0f} s a message needs"
        )
    transport = PoolTransport(pool, budget)
    if "taskId" in body or body.get("drain"):
        # A task queued or a slot freed: either way, start what is best now. The task a message
        # names gets no precedence: it goes when its turn comes, so priority and fair share hold
        # as on one machine.
        if drains is None:
            drain(ctx, transport)
        else:
            drains.run(lambda: drain(ctx, transport))
    elif "checkServer" in body:
        check_server(ctx, str(body["checkServer"]), transport)
    elif isinstance(body.get("webhook"), dict):
        deliver_webhook(
            ctx, str(body["webhook"].get("taskId")), int(body["webhook"].get("round", 0)), transport
        )
    else:
        log.warning("ignoring an unknown dispatch message: %s", sorted(body))


class PoolTransport:
    """The blocking transport: core.http's urllib3 calls on the container's pool, each bounded
    by the invocation's `budget` (None: by its own timeout only)."""

    def __init__(self, pool: urllib3.PoolManager, budget: Budget | None = None) -> None:
        self.pool = pool
        self.budget = budget

    def predict(self, request: BackendRequest) -> Outcome:
        if self.budget is None or self.budget.left_s() >= request.timeout_s:
            return backend_http.predict_sync(self.pool, request)
        left = self.budget.left_s()
        if left <= 0:
            return outlasted(0.0)  # claimed, but the invocation is ending: not sent
        outcome = backend_http.predict_sync(self.pool, dataclasses.replace(request, timeout_s=left))
        if outcome.kind is Kind.RETRY and self.budget.left_s() <= 0:
            return outlasted(left)  # the budget, not the task's timeout, cut it short
        return outcome

    def health(self, server: Server, timeout_s: float) -> tuple[bool, str | None]:
        return backend_http.health_sync(self.pool, server, self._bounded(timeout_s))

    def cancel(self, task: Task, server: Server) -> None:
        backend_http.cancel_sync(self.pool, task, server)

    def send_webhook(self, request: WebhookRequest) -> WebhookOutcome:
        bounded = self._bounded(request.timeout_s)
        if bounded < request.timeout_s:
            request = dataclasses.replace(request, timeout_s=bounded)
        return webhook_http.send_sync(self.pool, request)

    def _bounded(self, timeout_s: float) -> float:
        return timeout_s if self.budget is None else max(0.001, min(timeout_s, self.budget.left_s()))


def drain(ctx: Context, transport: PoolTransport) -> int:
    """Start what can go now, best first, up to DRAIN_BATCH; a full batch asks for another
    drain, so one invocation stays short (a task backing off has its own delayed message).
    Each predict call is bounded by the transport's budget."""
    # Slots were freed by other processes: this container's view of the fleet is stale.
    ctx.fleet.invalidate()
    started: list[Assignment] = []
    try:
        if work.drain(ctx, DRAIN_BATCH, started.append, max_batches=1).started == DRAIN_BATCH:
            ctx.queue.capacity_changed()
    finally:
        # Tasks claimed before a store fault still get their predict call.
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as workers:
            list(workers.map(lambda a: execute(ctx, a, transport), started))
    return len(started)


def execute(ctx: Context, assignment: Assignment, transport: PoolTransport) -> None:
    # A later backoff wake-up is the requeue's delayed message: the returned time is not needed.
    work.run(work.execute(ctx, assignment), transport)


def check_server(ctx: Context, server_id: str, transport: PoolTransport) -> None:
    work.run(work.check(ctx, server_id), transport)


def deliver_webhook(ctx: Context, task_id: str, round_: int, transport: PoolTransport) -> None:
    """A `{"webhook": ...}` message: make the attempt if it is due and nobody else has it."""
    delivery = webhook_delivery.find(ctx, task_id, round_)
    if delivery is None or delivery.state is not DeliveryState.PENDING:
        return
    wait_ms = delivery.next_attempt_at - ctx.now()
    if wait_ms > 0:  # early (SQS delays at most 15 minutes): on again
        ctx.queue.webhook_due(task_id, round_, delay_ms=wait_ms)
        return
    send_webhook(ctx, delivery, transport)


def send_webhook(ctx: Context, delivery: WebhookDelivery, transport: PoolTransport) -> bool:
    """Claim, POST and record one attempt; ask for the next one if it is to be retried."""
    return work.run(work.deliver(ctx, delivery), transport)


def sweep(
    ctx: Context,
    pool: urllib3.PoolManager,
    budget: Budget | None = None,
    connections: ExpiringConnections | None = None,
) -> sweeper.SweepReport:
    """The scheduled sweep, then the health checks and webhook attempts that are due
    (concurrently; a webhook whose message was lost or delayed past SQS's limit is sent here),
    each call bounded by what the invocation has left. WebSocket connections whose token has
    expired are closed first, so that they end as soon after `exp` as a sweep can."""
    closed = sweeper.close_expired_connections(connections, ctx.now()) if connections else 0
    report = sweeper.sweep(ctx)
    report.connections_closed = closed
    due = sweeper.due_for_check(ctx)
    deliveries = work.due_webhooks(ctx, WEBHOOK_BATCH)
    transport = PoolTransport(pool, budget)
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as workers:
        list(workers.map(lambda s: check_server(ctx, s.id, transport), due))
        report.webhooks_sent = sum(workers.map(lambda d: send_webhook(ctx, d, transport), deliveries))
    return report

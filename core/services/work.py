"""The work both runtimes do: dispatch (drain, predict, hand over on BUSY, settle), webhook
attempts (claim, POST, settle, re-arm) and active health checks, each written once.

The loops are sans-IO: a job is a generator that yields the outbound call it needs (`Predict`,
`CheckHealth`, `CancelCall`, a `WebhookRequest`) and is sent the answer. The one-machine
runtime answers through aiohttp on its event loop (`run_async`), the Lambda runtime through
urllib3 in threads (`run`); which calls run concurrently, and when, is the runtime's choice.
Store writes happen between the yields, in the caller's thread, exactly as before the split.

`drain` is the one place that decides which PENDING tasks start now (it runs the scheduler,
core/services/scheduler.py): both runtimes follow it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from core.domain.models import DeliveryState, Server, Task, TaskStatus, WebhookDelivery
from core.domain.protocol import BackendRequest, Kind, Outcome
from core.services import dispatch, scheduler, servers, webhook_delivery
from core.services.context import Context
from core.services.dispatch import Assignment, Attempt, Waiting
from core.services.webhook_delivery import WebhookOutcome, WebhookRequest

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class Predict:
    """POST the task to its backend; answered with an `Outcome`."""

    request: BackendRequest


@dataclass(frozen=True)
class CheckHealth:
    """GET the server's health endpoint; answered with `(healthy, why_not)`."""

    server: Server
    timeout_s: float


@dataclass(frozen=True)
class CancelCall:
    """Tell the backend its task was cancelled (best effort); answered with None. An async
    runtime may send it in the background: nothing after it waits for the backend."""

    task: Task
    server: Server


Call = Predict | CheckHealth | CancelCall | WebhookRequest
Job = Generator[Call, Any, R]


class Transport(Protocol):
    """Blocking calls (the Lambda runtime: urllib3)."""

    def predict(self, request: BackendRequest) -> Outcome: ...
    def health(self, server: Server, timeout_s: float) -> tuple[bool, str | None]: ...
    def cancel(self, task: Task, server: Server) -> None: ...
    def send_webhook(self, request: WebhookRequest) -> WebhookOutcome: ...


class AsyncTransport(Protocol):
    """The same calls on an event loop (one machine: aiohttp)."""

    async def predict(self, request: BackendRequest) -> Outcome: ...
    async def health(self, server: Server, timeout_s: float) -> tuple[bool, str | None]: ...
    async def cancel(self, task: Task, server: Server) -> None: ...
    async def send_webhook(self, request: WebhookRequest) -> WebhookOutcome: ...


def run(job: Job[R], transport: Transport) -> R:
    """Drive a job to its end with blocking calls; returns what the job returns. If a call
    raises, the job is closed (its `finally` blocks run) and the error goes to the caller."""
    answer: Any = None
    try:
        while True:
            call = job.send(answer)
            if isinstance(call, Predict):
                answer = transport.predict(call.request)
            elif isinstance(call, CheckHealth):
                answer = transport.health(call.server, call.timeout_s)
            elif isinstance(call, CancelCall):
                transport.cancel(call.task, call.server)
                answer = None
            else:
                answer = transport.send_webhook(call)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        job.close()


async def run_async(
    job: Job[R], transport: AsyncTransport, background: Callable[[Coroutine[Any, Any, None]], None]
) -> R:
    """Drive a job on the event loop. A `CancelCall` goes to `background` and the job goes on
    at once (the task's next state does not wait for a backend's cancel endpoint). If this
    coroutine is cancelled, the job is closed, so its `finally` blocks run."""
    answer: Any = None
    try:
        while True:
            call = job.send(answer)
            if isinstance(call, Predict):
                answer = await transport.predict(call.request)
            elif isinstance(call, CheckHealth):
                answer = await transport.health(call.server, call.timeout_s)
            elif isinstance(call, CancelCall):
                background(transport.cancel(call.task, call.server))
                answer = None
            else:
                answer = await transport.send_webhook(call)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        job.close()


# -- dispatch ---------------------------------------------------------------------------


@dataclass
class Drained:
    """What one drain started, and when a task that is backing off will be due."""

    started: int = 0
    wake_at: int | None = None

    def wake_no_later_than(self, when: int) -> None:
        self.wake_at = when if self.wake_at is None else min(self.wake_at, when)


def drain(
    ctx: Context, batch: int, start: Callable[[Assignment], None], *, max_batches: int | None = None
) -> Drained:
    """Which PENDING tasks start now: the scheduler's choice (core/services/scheduler.py), at
    most `batch * max_batches` when that is given. Each claim is handed to `start` as soon as it
    is made, so a store fault later in the drain cannot strand a claimed task without its
    predict call."""
    limit = None if max_batches is None else batch * max_batches
    chosen = scheduler.start_next(ctx, start, limit=limit)
    return Drained(started=chosen.started, wake_at=chosen.wake_at)


class PredictsInFlight:
    """Tasks whose predict call is on the wire, and those cancelled meanwhile: their cancel
    call waits for the predict, or it could reach the backend first and miss. One machine
    only: in AWS the cancel comes from another function, which cannot see this."""

    def __init__(self) -> None:
        self._predicting: set[str] = set()
        self._cancelled: set[str] = set()

    def defer_cancel(self, task_id: str) -> bool:
        """True if the task's predict is on the wire: its cancel is sent when it returns."""
        if task_id not in self._predicting:
            return False
        self._cancelled.add(task_id)
        return True

    def started(self, task_id: str) -> None:
        self._predicting.add(task_id)

    def finished(self, task_id: str) -> bool:
        """The predict returned (or was abandoned); True if a cancel waits for it."""
        self._predicting.discard(task_id)
        if task_id in self._cancelled:
            self._cancelled.discard(task_id)
            return True
        return False


def execute(
    ctx: Context, assignment: Assignment, in_flight: PredictsInFlight | None = None
) -> Job[int | None]:
    """Make the predict call and record its outcome; a busy server hands the task over to
    the next capable one at once. Returns when a task left waiting out a backoff is due
    (None if none), so a runtime that schedules its own wake-ups can set one."""
    attempt = Attempt()
    current: Assignment | None = assignment
    wake_at: int | None = None
    while current is not None:
        task_id = current.task.id
        if in_flight is not None:
            in_flight.started(task_id)
        cancelled = False
        started = time.perf_counter()
        try:
            outcome: Outcome = yield Predict(current.request)
        finally:
            if in_flight is not None:
                cancelled = in_flight.finished(task_id)
        ctx.telemetry.duration("DispatchLatency", (time.perf_counter() - started) * 1000)
        if cancelled:
            yield CancelCall(current.task, current.server)
        task = dispatch.settle(ctx, current, outcome, attempt)
        current = None
        if outcome.kind is Kind.BUSY and task is not None and task.status is TaskStatus.PENDING:
            decision = dispatch.assign(ctx, task, attempt)
            if isinstance(decision, Assignment):
                current = decision
            elif isinstance(decision, Waiting) and decision.not_before is not None:
                wake_at = decision.not_before
    return wake_at


# -- webhooks ---------------------------------------------------------------------------


def due_webhooks(ctx: Context, limit: int) -> list[WebhookDelivery]:
    return ctx.store.due_deliveries(ctx.now(), limit)


def deliver(ctx: Context, delivery: WebhookDelivery) -> Job[bool]:
    """Claim, POST and record one attempt of a due delivery; False if another sender had it."""
    claimed = webhook_delivery.claim(ctx, delivery)
    if claimed is None:
        return False
    yield from send(ctx, claimed)
    return True


def send(ctx: Context, claimed: WebhookDelivery) -> Job[WebhookDelivery | None]:
    """POST a claimed attempt and record it; if it is to be retried, ask (through the queue)
    for the next attempt when its backoff ends."""
    request = webhook_delivery.request(ctx, claimed)
    if isinstance(request, WebhookOutcome):
        outcome = request
    else:
        outcome = yield request
    settled = webhook_delivery.settle(ctx, claimed, outcome)
    if settled is not None and settled.state is DeliveryState.PENDING:
        delay = max(0, settled.next_attempt_at - ctx.now())
        ctx.queue.webhook_due(settled.task_id, settled.round, delay_ms=delay)
    return settled


# -- health -----------------------------------------------------------------------------


def check(ctx: Context, server_id: str) -> Job[Server | None]:
    """One active health check, recorded (None if the server is gone)."""
    server = ctx.store.get_server(server_id)
    if server is None:
        return None
    healthy, why = yield CheckHealth(server, ctx.config.health_check_timeout_ms / 1000)
    if not healthy:
        log.info("health check of %s failed: %s", server_id, why)
    return servers.record_check(ctx, server_id, healthy)

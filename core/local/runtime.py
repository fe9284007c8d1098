"""The one-machine runtime: the dispatcher and the sweeper as asyncio tasks in the server's
own event loop, beside the HTTP routes.

The dispatcher sleeps until something can have changed (a task created or requeued, a slot
freed, a server added or back online, a backoff ending) and then drains the PENDING index in
priority order; it never polls. Predict calls run concurrently, so slow backends never hold
up the API or each other. The loops themselves are core.services.work's; this module drives
them with aiohttp and decides when they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import aiohttp

from core.domain.models import Server, Task, TaskStatus
from core.domain.protocol import BackendRequest, Outcome
from core.http import aio as backend_http
from core.http import aio as webhook_http
from core.local.events import LocalEvents
from core.local.queue import CallbackQueue
from core.services import sweeper, webhook_delivery, work
from core.services.context import Context
from core.services.dispatch import Assignment
from core.services.webhook_delivery import WebhookOutcome, WebhookRequest

log = logging.getLogger(__name__)

DRAIN_BATCH = 256
WEBHOOK_BATCH = 100
HEALTH_CHECK_CONCURRENCY = 64


class SessionTransport:
    """The async transport: core.http's aiohttp calls on the runtime's session."""

    def __init__(self, client: aiohttp.ClientSession) -> None:
        self.client = client

    async def predict(self, request: BackendRequest) -> Outcome:
        return await backend_http.predict_async(self.client, request)

    async def health(self, server: Server, timeout_s: float) -> tuple[bool, str | None]:
        return await backend_http.health_async(self.client, server, timeout_s)

    async def cancel(self, task: Task, server: Server) -> None:
        await backend_http.cancel_async(self.client, task, server)

    async def send_webhook(self, request: WebhookRequest) -> WebhookOutcome:
        return await webhook_http.send_async(self.client, request)


class LocalRuntime:
    def __init__(self, ctx: Context) -> None:
        if not isinstance(ctx.queue, CallbackQueue):
            raise TypeError("the local runtime drives a CallbackQueue")
        self.ctx = ctx
        self.queue: CallbackQueue = ctx.queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._sweep_now = asyncio.Event()
        self._webhooks_due = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._in_flight = work.PredictsInFlight()
        self._client: aiohttp.ClientSession | None = None
        self._transport: SessionTransport | None = None
        self._health_checks: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # No pool limit: concurrency is bounded by the servers' slots, not by the client.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
        self._client = aiohttp.ClientSession(connector=connector)
        self._transport = SessionTransport(self._client)
        self.queue.on_enqueue = self._on_enqueue
        self.queue.on_capacity = self.wake
        self.queue.on_check_server = self._on_check_server
        self.queue.on_webhook = self._on_webhook
        if isinstance(self.ctx.events, LocalEvents):
            self.ctx.events.listeners.append(self._on_task_change)
        self._spawn(self._dispatch_loop())
        self._spawn(self._sweep_loop())
        self._spawn(self._webhook_loop())
        self.wake()

    async def stop(self) -> None:
        self.queue.on_enqueue = self.queue.on_capacity = None
        self.queue.on_check_server = None
        self.queue.on_webhook = None
        if self._timer is not None:
            self._timer.cancel()
        for job in list(self._background):
            job.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    @property
    def client(self) -> aiohttp.ClientSession:
        assert self._client is not None, "runtime not started"
        return self._client

    @property
    def transport(self) -> SessionTransport:
        assert self._transport is not None, "runtime not started"
        return self._transport

    async def _run(self, job: work.Job[Any]) -> Any:
        return await work.run_async(job, self.transport, self._spawn)

    def _spawn(self, job: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background job failed", exc_info=task.exception())

    # -- wake-ups ------------------------------------------------------------------------

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _on_enqueue(self, task_id: str, delay_ms: int) -> None:
        if delay_ms > 0:
            self._wake_at(self.ctx.now() + delay_ms)
        else:
            self.wake()

    def _wake_at(self, when_ms: int) -> None:
        """Wake the dispatcher at `when_ms` (epoch ms), keeping only the earliest timer."""
        loop = self._loop
        if loop is None:
            return
        at = loop.time() + max(0, when_ms - self.ctx.now()) / 1000
        if self._timer_at is not None and self._timer_at <= at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = self._timer_at = None
        self._wake.set()

    def _on_check_server(self, server_id: str) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self._spawn(self._check_one(server_id)))

    # -- dispatch ------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.drain()
            except Exception:
                log.exception("dispatch drain failed; retrying at the next wake-up")
                self._wake_at(self.ctx.now() + 1000)

    def drain(self) -> None:
        """Start what can go now (work.drain decides), each predict call on its own."""
        drained = work.drain(self.ctx, DRAIN_BATCH, lambda a: self._spawn(self._execute(a)))
        if drained.wake_at is not None:
            self._wake_at(drained.wake_at)

    async def _execute(self, assignment: Assignment) -> None:
        wake_at = await self._run(work.execute(self.ctx, assignment, self._in_flight))
        if wake_at is not None:
            self._wake_at(wake_at)

    def _on_task_change(self, task: Task, previous: TaskStatus | None) -> None:
        # A task cancelled while PROCESSING keeps its server: tell that backend (best effort).
        if task.status is not TaskStatus.CANCELLED or previous is not TaskStatus.PROCESSING:
            return
        if self._in_flight.defer_cancel(task.id):
            return
        if task.server_id is not None and self._loop is not None:
            server = self.ctx.fleet.get(task.server_id)
            if server is not None and server.endpoints.cancel:
                call = self.transport.cancel(task, server)
                self._loop.call_soon_threadsafe(lambda: self._spawn(call))

    # -- webhooks ------------------------------------------------------------------------

    def _on_webhook(self, delay_ms: int) -> None:
        loop = self._loop
        if loop is None:
            return
        if delay_ms > 0:
            loop.call_soon_threadsafe(lambda: loop.call_later(delay_ms / 1000, self._webhooks_due.set))
        else:
            loop.call_soon_threadsafe(self._webhooks_due.set)

    async def _webhook_loop(self) -> None:
        """Send what is due: at once when a delivery is recorded, when a backoff ends, and
        at every sweep interval (deliveries left by an earlier process). Each POST runs on its
        own, so a slow receiver holds nothing else up."""
        interval = self.ctx.config.sweep_interval_ms / 1000
        while True:
            try:
                for due in work.due_webhooks(self.ctx, WEBHOOK_BATCH):
                    # Claimed here, not in the spawned job: the next pass must not see it due.
                    claimed = webhook_delivery.claim(self.ctx, due)
                    if claimed is not None:
                        self._spawn(self._run(work.send(self.ctx, claimed)))
            except Exception:
                log.exception("webhook sweep failed; trying again at the next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._webhooks_due.wait(), interval)
            self._webhooks_due.clear()

    # -- sweeper -------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        interval = self.ctx.config.sweep_interval_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                report = sweeper.sweep(self.ctx)
                if (
                    report.timed_out
                    or report.queue_timeouts
                    or report.silent_servers
                    or report.slots_reconciled
                ):
                    log.info("sweep: %s", report)
                # Health checks run beside the sweeps: a backend that holds its health call
                # for HEALTH_CHECK_TIMEOUT must not hold back timeouts by as much.
                if self._health_checks is None or self._health_checks.done():
                    self._health_checks = asyncio.ensure_future(self._check_health())
                    self._background.add(self._health_checks)
                    self._health_checks.add_done_callback(self._done)
            except Exception:
                log.exception("sweep failed; trying again at the next interval")
            # Sweeps start every interval (not an interval after the last one ended); a sweep
            # longer than that still leaves the loop a breath before the next.
            wait = max(interval / 10, interval - (loop.time() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_now.wait(), wait)
            self._sweep_now.clear()

    async def _check_health(self) -> None:
        due = sweeper.due_for_check(self.ctx)
        limit = asyncio.Semaphore(HEALTH_CHECK_CONCURRENCY)

        async def check(server_id: str) -> None:
            async with limit:
                await self._check_one(server_id)

        await asyncio.gather(*(check(s.id) for s in due))

    async def _check_one(self, server_id: str) -> None:
        await self._run(work.check(self.ctx, server_id))

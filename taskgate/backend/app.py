"""`create_app(handler)`: the ASGI app of a backend written as one function.

`/predict` takes a task (202 at once; 429 when `max_concurrent` tasks are running, which
taskgate reads as busy and tries another server), runs `handler(job)` (an `async` one in the
event loop, a plain one in a worker thread) and reports through the task's callback URL:
progress and output as the handler makes them, then the result (its return value) or the
failure (the message of the exception it raised). `/cancel` stops a task, `/health` and
`/metrics` answer taskgate's checks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from taskgate.backend.job import BadJobRequest, Job, JobRequest, submitter
from taskgate.backend.reports import Kind, Report, ReportQueue, deliver

log = logging.getLogger("taskgate.backend")

Handler = Callable[[Job], Any]
# After the time taskgate gave an attempt, a late result may still land before taskgate's
# sweeper times the task out; past this grace the job is stopped.
DEADLINE_GRACE_S = 2.0
# Plain handlers run in threads of their own pool: the event loop's default pool has a few
# workers only, and a blocked handler must not hold up another.
DEFAULT_THREADS = 32
# The error text taskgate keeps is bounded; a longer message is cut here, not there.
MAX_ERROR_CHARS = 2000


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The protocol's error answer: taskgate reads `error` as the reason (docs/BACKENDS.md)."""
    return JSONResponse({"status": "error", "error": message}, status, headers=headers)


def failure_text(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:MAX_ERROR_CHARS]


@dataclass(eq=False)
class Running:
    job: Job
    reports: ReportQueue
    work: asyncio.Task[None] | None = None
    expiry: asyncio.TimerHandle | None = None
    stopped: bool = False  # cancelled or past its time: nothing more is reported


@dataclass
class Counts:
    received: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    busy: int = 0


@dataclass(eq=False)
class Backend:
    """The routes of a backend. `create_app` is the usual way in; a subclass may override
    `deliver_report` (to observe or filter what is sent, as `taskgate mock-backend` does)."""

    handler: Handler
    server_id: str | None = None
    max_concurrent: int | None = None
    api_key: str | None = None
    name: str = "taskgate-backend"
    running: dict[str, Running] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    _client: httpx.AsyncClient | None = None
    _threads: concurrent.futures.ThreadPoolExecutor | None = None

    def __post_init__(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        # An `async def` function, or an object whose `__call__` is one.
        self._is_async = inspect.iscoroutinefunction(self.handler) or inspect.iscoroutinefunction(
            type(self.handler).__call__
        )

    # -- routes ---------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/predict", self.predict, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/cancel", self.cancel, methods=["POST"]),
        ]

    def authorized(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode())

    async def predict(self, request: Request) -> Response:
        if not self.authorized(request):
            return error(401, "Invalid API key")
        try:
            job_request = JobRequest.parse(await _json(request), request.headers.get("idempotency-key"))
        except BadJobRequest as exc:
            return error(400, str(exc))
        return self.accept(job_request)

    def accept(self, job_request: JobRequest) -> Response:
        """Start the job and answer 202; 429 when full. The same attempt sent again while it
        runs (a resent predict, same callback token) is the same work: 202, and nothing starts
        twice. A later attempt of a task still running here (taskgate gave up on the earlier
        one) replaces it: the earlier one's reports would be refused."""
        current = self.running.get(job_request.id)
        if current is not None:
            if current.job.request.callback_token == job_request.callback_token:
                return JSONResponse({"status": "accepted"}, 202)
            log.info("task %s: a new attempt replaces the one running", job_request.id)
            self._halt(current)
            del self.running[job_request.id]
        if self.max_concurrent is not None and len(self.running) >= self.max_concurrent:
            self.counts.busy += 1
            return error(429, f"Busy: {len(self.running)} tasks running", {"Retry-After": "1"})
        self.start(job_request)
        return JSONResponse({"status": "accepted"}, 202)

    async def health(self, request: Request) -> Response:
        model: dict[str, Any] = {"name": self.name}
        if self.server_id is not None:
            model["server_id"] = self.server_id
        return JSONResponse({"status": "healthy", "model": model})

    async def metrics(self, request: Request) -> Response:
        counts = self.counts
        return JSONResponse(
            {
                "activeTasks": len(self.running),
                "maxConcurrent": self.max_concurrent,
                "received": counts.received,
                "succeeded": counts.succeeded,
                "failed": counts.failed,
                "cancelled": counts.cancelled,
                "busy": counts.busy,
            }
        )

    async def cancel(self, request: Request) -> Response:
        if not self.authorized(request):
            return error(401, "Invalid API key")
        body = await _json(request)
        task_id = body.get("task_id") or body.get("id") if isinstance(body, dict) else None
        if not isinstance(task_id, str) or not task_id:
            return error(400, "task_id (or id) is required: a non-empty string")
        found = self.stop(task_id)
        return JSONResponse({"status": "cancelled" if found else "unknown", "id": task_id})

    # -- jobs -----------------------------------------------------------------------------

    def start(self, job_request: JobRequest) -> Job:
        loop = asyncio.get_running_loop()
        reports = ReportQueue(lambda report: self._send(running, report))
        job = Job(job_request, submitter(loop, reports.put))
        running = Running(job, reports)
        self.running[job.id] = running
        self.counts.received += 1
        running.work = asyncio.create_task(self._run(running), name=f"taskgate-job-{job.id}")
        if job_request.timeout_s is not None:
            running.expiry = loop.call_later(job_request.timeout_s + DEADLINE_GRACE_S, self._expire, running)
        return job

    def stop(self, task_id: str) -> bool:
        """Cancel a running job: its handler is cancelled (an async one) or sees `cancelled`
        (a plain one), and nothing more is reported. False when no such job runs."""
        running = self.running.get(task_id)
        if running is None:
            return False
        self.counts.cancelled += 1
        self._halt(running)
        return True

    def _expire(self, running: Running) -> None:
        if self.running.get(running.job.id) is running:
            log.info("task %s: its time is up; stopped", running.job.id)
            self._halt(running)

    def _halt(self, running: Running) -> None:
        running.stopped = True
        running.job._cancel()
        running.reports.drop()
        if running.work is not None:
            running.work.cancel()

    async def _run(self, running: Running) -> None:
        job = running.job
        sender = asyncio.create_task(running.reports.run())
        final: Report | None = None
        try:
            result = await self._call_handler(job)
        except asyncio.CancelledError:
            if not running.stopped:
                raise  # the app is shutting down
        except Exception as exc:
            log.info("task %s failed: %s", job.id, failure_text(exc), exc_info=True)
            final = Report.failure(failure_text(exc))
        else:
            try:
                final = Report.result(result)
            except (TypeError, msgspec.EncodeError) as exc:
                final = Report.failure(f"The handler's result is not JSON: {exc}")
        finally:
            # The slot is free before the result is sent: taskgate may send the next task as
            # soon as it has this one's result.
            if self.running.get(job.id) is running:
                del self.running[job.id]
            if running.expiry is not None:
                running.expiry.cancel()
            if final is not None and not running.stopped:
                if final.kind is Kind.RESULT:
                    self.counts.succeeded += 1
                else:
                    self.counts.failed += 1
            running.reports.close(None if running.stopped else final)
        await sender

    async def _call_handler(self, job: Job) -> Any:
        if self._is_async:
            result = await self.handler(job)
        else:
            if self._threads is None:
                self._threads = concurrent.futures.ThreadPoolExecutor(
                    self.max_concurrent or DEFAULT_THREADS, thread_name_prefix="taskgate-job"
                )
            result = await asyncio.get_running_loop().run_in_executor(self._threads, self.handler, job)
            if inspect.isawaitable(result):  # a plain function that returned a coroutine
                result = await result
        return result

    async def _send(self, running: Running, report: Report) -> None:
        status = await self.deliver_report(running.job, report)
        if status == 409 and not report.final:
            # taskgate no longer runs this attempt (cancelled, timed out, moved on).
            running.job._cancel()

    async def deliver_report(self, job: Job, report: Report) -> int | None:
        """Send one report (retried briefly); its HTTP status, None when none came."""
        return await deliver(self.client(), job.request.callback_url, job.request.callback_token, report)

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        return self._client

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop every job (taskgate times them out and retries them elsewhere)."""
        works = [r.work for r in self.running.values() if r.work is not None]
        for running in list(self.running.values()):
            self._halt(running)
        await asyncio.gather(*works, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None


async def _json(request: Request) -> Any:
    try:
        return msgspec.json.decode(await request.body())
    except msgspec.DecodeError:
        return None


def create_app(
    handler: Callable[[Job], Any] | Callable[[Job], Awaitable[Any]],
    *,
    server_id: str | None = None,
    max_concurrent: int | None = None,
    api_key: str | None = None,
    name: str = "taskgate-backend",
) -> Starlette:
    """The ASGI app of a backend whose work is `handler(job)`.

    `server_id`: reported by `/health` as `model.server_id` (taskgate checks it against the
    id it registered). `max_concurrent`: tasks at once; one more is answered 429. `api_key`:
    when set, `/predict` and `/cancel` require `Authorization: Bearer <api_key>` (the
    server's `apiKey` at registration).
    """
    backend = Backend(handler, server_id=server_id, max_concurrent=max_concurrent, api_key=api_key, name=name)
    app = Starlette(routes=backend.routes(), lifespan=backend.lifespan)
    app.state.backend = backend
    return app

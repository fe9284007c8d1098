"""`taskgate mock-backend`: a fake inference backend speaking taskgate's backend protocol, for
end-to-end tests, benchmarks and trying taskgate without a GPU. Its async mode is a backend
written with the SDK (taskgate.backend): a handler that sleeps, reports progress and echoes.

`/predict`, `/health`, `/metrics` and `/cancel` are the protocol. `/_stats`, `/_control` and
`/_reset` are test hooks: they read the counters, change settings at runtime and zero the
counters. With `--record FILE` every predict call received is also appended to FILE as one
JSON line (task id, attempt, outcome), written before the answer: the record a reliability
test reads to prove, from outside taskgate, that no attempt was sent twice, even of a backend
killed mid-run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from taskgate.backend import Backend, Job, JobRequest, Report
from taskgate.backend.job import BadJobRequest


@dataclass
class MockSettings:
    name: str = "mock-backend"
    server_id: str | None = None  # None: /health reports no model.server_id
    mode: Literal["sync", "async"] = "sync"
    delay_ms: float = 0
    fail_rate: float = 0.0
    busy_rate: float = 0.0
    fail_status: int = 500
    lose_callback_rate: float = 0.0
    progress_steps: int = 1
    healthy: bool = True
    api_key: str | None = None  # None: accept any Authorization
    seed: int | None = None
    # Accepted calls that take stall_ms instead of delay_ms (past the task's timeout).
    stall_rate: float = 0.0
    stall_ms: float = 0
    record: str | None = None  # append one JSON line per predict call to this file


@dataclass
class _Stats:
    received: int = 0
    current: int = 0
    max_concurrency: int = 0
    lost_callbacks: int = 0
    stalled: int = 0
    by_task: Counter[str] = field(default_factory=Counter)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=lambda: Counter(ok=0, busy=0, failed=0))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _rate(value: Any) -> bool:
    return _number(value) and 0 <= value <= 1


# /_control key -> (MockSettings field, check of the new value)
_CONTROL: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "mode": ("mode", lambda v: v in ("sync", "async")),
    "delayMs": ("delay_ms", lambda v: _number(v) and v >= 0),
    "failRate": ("fail_rate", _rate),
    "busyRate": ("busy_rate", _rate),
    "failStatus": ("fail_status", lambda v: isinstance(v, int) and 200 <= v <= 599 and v != 202),
    "loseCallbackRate": ("lose_callback_rate", _rate),
    "progressSteps": ("progress_steps", lambda v: isinstance(v, int) and 0 <= v <= 100),
    "healthy": ("healthy", lambda v: isinstance(v, bool)),
    "serverId": ("server_id", lambda v: v is None or isinstance(v, str)),
    "stallRate": ("stall_rate", _rate),
    "stallMs": ("stall_ms", lambda v: _number(v) and v >= 0),
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status)


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _task_id(body: dict[str, Any]) -> str:
    return str(body.get("task_id") or body.get("id") or "")


def _attempt(request: Request) -> int | None:
    """taskgate's Idempotency-Key is `<task id>:<attempt>`."""
    _, _, attempt = request.headers.get("idempotency-key", "").rpartition(":")
    return int(attempt) if attempt.isascii() and attempt.isdigit() else None


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return run


@dataclass
class _Plan:
    """What the mock decided for one accepted async task, for its handler to carry out."""

    task_id: str
    delay_ms: float
    result: dict[str, Any]
    leave: Callable[[], None]


class _MockBackend(Backend):
    """The SDK's backend (taskgate.backend) with a handler that sleeps and echoes, and the
    mock's own decisions around it: failures and busy answers before the SDK sees a task,
    answers inline in sync mode, lost results, and the counters the tests read."""

    def __init__(self, settings: MockSettings) -> None:
        super().__init__(
            self.work, server_id=settings.server_id, api_key=settings.api_key, name=settings.name
        )
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.stats = _Stats()
        self.plans: dict[str, _Plan] = {}  # by callback token: one per attempt
        self.losing: set[str] = set()  # tasks whose result is never sent
        # Line-buffered: each line reaches the file when written, so a kill -9 loses none.
        self.record = open(settings.record, "a", buffering=1) if settings.record else None  # noqa: SIM115

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.shutdown()
            if self.record is not None:
                self.record.close()

    # In flight counts what taskgate holds a slot for; it ends just before the answer (or the
    # final callback) is sent, since taskgate may send the next task as soon as it has it.
    def _enter(self) -> None:
        self.stats.current += 1
        self.stats.max_concurrency = max(self.stats.max_concurrency, self.stats.current)

    def _leave(self) -> None:
        self.stats.current -= 1

    def _write_record(self, task_id: str, request: Request, outcome: str) -> None:
        if self.record is not None:
            line = {
                "task": task_id,
                "attempt": _attempt(request),
                "outcome": outcome,
                "server": self.settings.name,
            }
            self.record.write(json.dumps(line) + "\n")

    async def predict(self, request: Request) -> Response:
        s = self.settings
        if not self.authorized(request):
            return _error(401, "Invalid API key")
        self._enter()
        leave = _once(self._leave)
        handed_to_job = False
        try:
            body = await _json_object(request)
            if body is None:
                return _error(400, "The body must be a JSON object")
            task_id = _task_id(body)
            if s.mode == "async" and not isinstance(body.get("callback_url"), str):
                return _error(400, "callback_url is required in async mode")
            self.stats.received += 1
            self.stats.by_task[task_id] += 1
            if self.rng.random() < s.busy_rate:
                self.stats.outcomes["busy"] += 1
                self._write_record(task_id, request, "busy")
                return _error(503, "Busy")
            if self.rng.random() < s.fail_rate:
                self.stats.outcomes["failed"] += 1
                self._write_record(task_id, request, "failed")
                return _error(s.fail_status, "Injected failure")
            self.stats.outcomes["ok"] += 1
            delay_ms = s.delay_ms
            stalled = bool(s.stall_rate) and self.rng.random() < s.stall_rate
            if stalled:
                self.stats.stalled += 1
                delay_ms = s.stall_ms
            # taskgate gives the slot back once the task's time is up (it times the attempt
            # out): from then on this work no longer counts against its maxConcurrent.
            deadline, timeout = body.get("deadline"), body.get("timeout")
            if isinstance(deadline, int) and not isinstance(deadline, bool):
                asyncio.get_running_loop().call_later(max(0.0, deadline / 1000 - time.time()), leave)
            elif isinstance(timeout, int | float) and not isinstance(timeout, bool):
                asyncio.get_running_loop().call_later(timeout / 1000, leave)
            self._write_record(task_id, request, "stalled" if stalled else "ok")
            result = {"echo": body.get("payload"), "server": s.name, "taskId": task_id}
            if s.mode == "sync":
                await asyncio.sleep(delay_ms / 1000)
                return JSONResponse({"status": "completed", "result": result})
            try:
                job_request = JobRequest.parse(body, request.headers.get("idempotency-key"))
            except BadJobRequest as exc:
                return _error(400, str(exc))
            running = self.running.get(task_id)
            if running is not None and running.job.request.callback_token == job_request.callback_token:
                return self.accept(job_request)  # this attempt again: the SDK keeps one job
            self.plans[job_request.callback_token] = _Plan(task_id, delay_ms, result, leave)
            handed_to_job = True  # the job leaves when it is done
            return self.accept(job_request)
        finally:
            if not handed_to_job:
                leave()

    async def work(self, job: Job) -> dict[str, Any]:
        """The handler: progress steps spread over the delay, then the echo as the result."""
        plan = self.plans[job.request.callback_token]
        steps = self.settings.progress_steps
        pause = plan.delay_ms / 1000 / (steps + 1)
        try:
            for step in range(1, steps + 1):
                await asyncio.sleep(pause)
                job.progress(100 * step // (steps + 1))
            await asyncio.sleep(pause)
        finally:
            self._forget(job.request.callback_token)
        if self.rng.random() < self.settings.lose_callback_rate:
            self.losing.add(job.id)
        return plan.result

    def _forget(self, token: str) -> None:
        plan = self.plans.pop(token, None)
        if plan is not None:
            plan.leave()

    async def deliver_report(self, job: Job, report: Report) -> int | None:
        if report.final and job.id in self.losing:
            # Counted here, in the result's place in the job's ordered reports: once counted,
            # every earlier report was answered and nothing more comes from this job.
            self.losing.discard(job.id)
            self.stats.lost_callbacks += 1
            return None
        status = await super().deliver_report(job, report)
        self.stats.callbacks.append({"taskId": job.id, "status": report.status, "httpStatus": status})
        return status

    async def health(self, request: Request) -> Response:
        s = self.settings
        if not s.healthy:
            return JSONResponse({"status": "unhealthy"}, 503)
        model = {"name": s.name} if s.server_id is None else {"server_id": s.server_id, "name": s.name}
        return JSONResponse({"status": "healthy", "model": model})

    async def metrics(self, request: Request) -> Response:
        stats = self.stats
        return JSONResponse(
            {"activeTasks": stats.current, "received": stats.received, "cpu": 0, "memory": 0, "gpu": 0}
        )

    async def cancel(self, request: Request) -> Response:
        if not self.authorized(request):
            return _error(401, "Invalid API key")
        body = await _json_object(request)
        if body is None:
            return _error(400, "The body must be a JSON object")
        task_id = _task_id(body)
        self.stats.cancelled.append(task_id)
        # A cancelled task frees its slot in taskgate, so its work stops here too (also one
        # whose handler had not started yet).
        self.stop(task_id)
        for token in [token for token, plan in self.plans.items() if plan.task_id == task_id]:
            self._forget(token)
        return JSONResponse({"status": "cancelled", "id": task_id})

    async def read_stats(self, request: Request) -> JSONResponse:
        stats = self.stats
        return JSONResponse(
            {
                "received": stats.received,
                "current": stats.current,
                "maxConcurrency": stats.max_concurrency,
                "byTask": dict(stats.by_task),
                "callbacks": stats.callbacks,
                "cancelled": stats.cancelled,
                "outcomes": dict(stats.outcomes),
                "lostCallbacks": stats.lost_callbacks,
                "stalled": stats.stalled,
            }
        )

    async def control(self, request: Request) -> JSONResponse:
        changes = await _json_object(request)
        if changes is None:
            return _error(400, "The body must be a JSON object")
        for key, value in changes.items():
            if key not in _CONTROL:
                return _error(400, f"Unknown setting {key!r}; known: {', '.join(_CONTROL)}")
            if not _CONTROL[key][1](value):
                return _error(400, f"Invalid value for {key}: {value!r}")
        for key, value in changes.items():
            setattr(self.settings, _CONTROL[key][0], value)
        return JSONResponse({key: getattr(self.settings, attr) for key, (attr, _) in _CONTROL.items()})

    async def reset(self, request: Request) -> JSONResponse:
        # Work in flight stays in flight: it will still leave.
        current = self.stats.current
        self.stats = _Stats(current=current, max_concurrency=current)
        return JSONResponse({"status": "reset"})


def build_app(settings: MockSettings) -> Starlette:
    mock = _MockBackend(settings)
    routes = [
        *mock.routes(),
        Route("/_stats", mock.read_stats, methods=["GET"]),
        Route("/_control", mock.control, methods=["POST"]),
        Route("/_reset", mock.reset, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=mock.lifespan)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    settings = MockSettings(
        name=args.name,
        server_id=args.server_id,
        mode=args.mode,
        delay_ms=args.delay_ms,
        fail_rate=args.fail_rate,
        busy_rate=args.busy_rate,
        fail_status=args.fail_status,
        lose_callback_rate=args.lose_callback_rate,
        progress_steps=args.progress_steps,
        healthy=not args.unhealthy,
        api_key=args.api_key,
        seed=args.seed,
        stall_rate=args.stall_rate,
        stall_ms=args.stall_ms,
        record=args.record,
    )
    base = f"http://{args.host}:{args.port}"
    print(
        f"taskgate mock-backend: {settings.name}, {settings.mode}  predict {base}/predict  health {base}/health",
        flush=True,
    )
    uvicorn.run(build_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0

"""The backend SDK (taskgate.backend) in one event loop: its app called through httpx's ASGI
transport, its reports answered by a fake gateway (httpx.MockTransport) that records them.
Nothing leaves the process. The SDK as its own process against a real gateway is
tests/e2e/test_backend_sdk.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest

from taskgate.backend import Backend, Job, create_app
from taskgate.backend import app as backend_app
from taskgate.backend import reports as backend_reports

CALLBACK = "http://gateway.test/api/task/task_1"


def predict_body(task_id: str = "task_1", **changes: Any) -> dict[str, Any]:
    request = {
        "type": "text",
        "priority": 3,
        "payload": {"prompt": "hi"},
        "capabilities": ["gpu"],
        "async": True,
    }
    return {
        "id": task_id,
        "task_id": task_id,
        **request,
        "request": request,
        "callback_url": f"http://gateway.test/api/task/{task_id}",
        "callback_token": f"token-{task_id}",
        "timeout": 60_000,
        **changes,
    }


@dataclass
class Report:
    method: str
    path: str
    token: str
    body: Any


@dataclass
class FakeGateway:
    """Answers reports with `answers` (in turn, then 200) and records them; `finished` is set
    when a task's final report (COMPLETED or FAILED) is answered 2xx."""

    answers: list[int] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    finished: dict[str, asyncio.Event] = field(default_factory=dict)

    def done(self, task_id: str) -> asyncio.Event:
        return self.finished.setdefault(task_id, asyncio.Event())

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = msgspec.json.decode(request.content)
        self.reports.append(Report(request.method, request.url.path, request.headers["authorization"], body))
        status = self.answers.pop(0) if self.answers else 200
        final = request.method == "PUT" and body.get("status") in ("COMPLETED", "FAILED")
        if final and status < 300:
            self.done(request.url.path.split("/")[3]).set()
        return httpx.Response(status, json={}, headers={"Retry-After": "0"} if status == 429 else None)

    def of(self, task_id: str) -> list[Report]:
        return [r for r in self.reports if r.path.startswith(f"/api/task/{task_id}")]


def run(
    handler: Callable[[Job], Any],
    scenario: Callable[[httpx.AsyncClient, Backend, FakeGateway], Awaitable[None]],
    gateway: FakeGateway | None = None,
    **options: Any,
) -> FakeGateway:
    gateway = gateway or FakeGateway()

    async def main() -> None:
        app = create_app(handler, **options)
        backend: Backend = app.state.backend
        backend._client = httpx.AsyncClient(transport=httpx.MockTransport(gateway))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://backend.test") as client:
            try:
                await asyncio.wait_for(scenario(client, backend, gateway), 10)
            finally:
                await backend.shutdown()

    asyncio.run(main())
    return gateway


async def finished(gateway: FakeGateway, task_id: str = "task_1") -> None:
    await asyncio.wait_for(gateway.done(task_id).wait(), 5)


# -- a task carried through -----------------------------------------------------------------


def test_an_async_handler_reports_progress_output_and_result_in_order() -> None:
    seen: list[Job] = []

    async def handler(job: Job) -> dict[str, Any]:
        seen.append(job)
        job.progress(10, "loading")
        job.emit({"token": "a"})
        job.emit("b")
        job.progress(90)
        return {"echo": job.payload}

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        reply = await client.post("/predict", json=predict_body())
        assert (reply.status_code, reply.json()) == (202, {"status": "accepted"})
        await finished(gateway)

    gateway = run(handler, scenario)

    (job,) = seen
    assert (job.id, job.type, job.priority, job.payload, job.capabilities) == (
        "task_1",
        "text",
        3,
        {"prompt": "hi"},
        ["gpu"],
    )
    assert not job.cancelled
    assert [(r.method, r.path, r.body) for r in gateway.reports] == [
        ("PUT", "/api/task/task_1", {"status": "PROCESSING", "progress": 10, "message": "loading"}),
        ("POST", "/api/task/task_1/output", {"data": {"token": "a"}}),
        ("POST", "/api/task/task_1/output", {"data": "b"}),
        ("PUT", "/api/task/task_1", {"status": "PROCESSING", "progress": 90}),
        ("PUT", "/api/task/task_1", {"status": "COMPLETED", "result": {"echo": {"prompt": "hi"}}}),
    ]
    assert {r.token for r in gateway.reports} == {"Bearer token-task_1"}


def test_a_plain_handler_runs_in_a_thread_and_its_reports_keep_their_order() -> None:
    threads: list[int] = []

    def handler(job: Job) -> str:
        threads.append(threading.get_ident())
        for n in range(20):
            job.emit(n)
        return "done"

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        assert (await client.post("/predict", json=predict_body())).status_code == 202
        await finished(gateway)

    gateway = run(handler, scenario)

    assert threads and threads[0] != threading.get_ident()
    assert [r.body for r in gateway.reports] == [
        *({"data": n} for n in range(20)),
        {"status": "COMPLETED", "result": "done"},
    ]


def test_an_exception_fails_the_task_with_its_message() -> None:
    async def handler(job: Job) -> None:
        job.progress(5)
        raise RuntimeError("CUDA out of memory")

    def plain(job: Job) -> None:
        raise KeyError  # no message: the exception's name

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        assert (await client.post("/predict", json=predict_body())).status_code == 202
        await finished(gateway)

    gateway = run(handler, scenario)
    assert gateway.reports[-1].body == {"status": "FAILED", "error": "CUDA out of memory"}
    gateway = run(plain, scenario)
    assert [r.body for r in gateway.reports] == [{"status": "FAILED", "error": "KeyError"}]


def test_a_result_that_is_not_json_fails_the_task_saying_so() -> None:
    def handler(job: Job) -> object:
        return object()

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        assert (await client.post("/predict", json=predict_body())).status_code == 202
        await finished(gateway)

    (report,) = run(handler, scenario).reports
    assert report.body["status"] == "FAILED"
    assert report.body["error"].startswith("The handler's result is not JSON: ")


def test_bad_progress_and_output_fail_the_task_where_they_are_made() -> None:
    def bad_percent(job: Job) -> None:
        job.progress(101)

    def bad_output(job: Job) -> None:
        job.emit(object())

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        assert (await client.post("/predict", json=predict_body())).status_code == 202
        await finished(gateway)

    (report,) = run(bad_percent, scenario).reports
    assert report.body == {"status": "FAILED", "error": "progress must be an integer from 0 to 100, not 101"}
    (report,) = run(bad_output, scenario).reports
    assert report.body["status"] == "FAILED" and report.body["error"].startswith("emit() takes a JSON value")


# -- capacity, duplicates, cancel ------------------------------------------------------------


def test_max_concurrent_answers_429_when_full_and_accepts_again_once_a_task_ends() -> None:
    release = asyncio.Event()
    calls: list[str] = []

    async def handler(job: Job) -> str:
        calls.append(job.id)
        await release.wait()
        return job.id

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        assert (await client.post("/predict", json=predict_body("task_1"))).status_code == 202
        busy = await client.post("/predict", json=predict_body("task_2"))
        assert (busy.status_code, busy.headers["retry-after"]) == (429, "1")
        assert busy.json() == {"status": "error", "error": "Busy: 1 tasks running"}
        # The same task again while it runs is the same work: accepted, not started twice.
        assert (await client.post("/predict", json=predict_body("task_1"))).status_code == 202
        metrics = (await client.get("/metrics")).json()
        assert (metrics["activeTasks"], metrics["maxConcurrent"], metrics["busy"]) == (1, 1, 1)
        release.set()
        await finished(gateway, "task_1")
        assert (await client.post("/predict", json=predict_body("task_2"))).status_code == 202
        await finished(gateway, "task_2")
        metrics = (await client.get("/metrics")).json()
        assert (metrics["activeTasks"], metrics["received"], metrics["succeeded"]) == (0, 2, 2)

    run(handler, scenario, max_concurrent=1)
    assert calls == ["task_1", "task_2"]


def test_cancel_stops_an_async_handler_and_nothing_more_is_reported() -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def handler(job: Job) -> str:
        job.progress(1)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append(f"cancelled={job.cancelled}")
            raise
        return "never"

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        assert (await client.post("/predict", json=predict_body())).status_code == 202
        await started.wait()
        work = backend.running["task_1"].work
        reply = await client.post("/cancel", json={"id": "task_1", "task_id": "task_1", "attempt": 1})
        assert reply.json() == {"status": "cancelled", "id": "task_1"}
        assert work is not None
        await work  # the handler, then every report queued, are done with
        assert "task_1" not in backend.running
        unknown = await client.post("/cancel", json={"id": "task_9"})
        assert (unknown.status_code, unknown.json()["status"]) == (200, "unknown")

    gateway = run(handler, scenario)
    assert outcome == ["cancelled=True"]
    assert all(r.body.get("status") != "COMPLETED" for r in gateway.reports)


def test_a_plain_handler_sees_cancelled_and_its_result_is_not_sent() -> None:
    started = threading.Event()
    saw: list[bool] = []

    def handler(job: Job) -> str:
        started.set()
        saw.append(job.wait_cancelled(timeout=5))
        job.emit("after cancel")  # ignored: the job is over
        return "late"

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        assert (await client.post("/predict", json=predict_body())).status_code == 202
        await asyncio.to_thread(started.wait, 5)
        assert (await client.post("/cancel", json={"task_id": "task_1"})).status_code == 200
        await asyncio.to_thread(lambda: backend._threads.shutdown(wait=True) if backend._threads else None)

    gateway = run(handler, scenario)
    assert saw == [True] and gateway.reports == []


def test_a_task_past_its_time_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_app, "DEADLINE_GRACE_S", 0.0)
    cancelled = asyncio.Event()

    async def handler(job: Job) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        assert (await client.post("/predict", json=predict_body(timeout=50))).status_code == 202
        await cancelled.wait()
        work = backend.running.get("task_1")
        if work is not None and work.work is not None:
            await work.work
        assert backend.running == {}

    assert run(handler, scenario).reports == []


# -- reports that fail ---------------------------------------------------------------------------


def test_a_report_is_retried_on_transient_failures_and_order_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_reports, "FIRST_PAUSE_S", 0.0)

    async def handler(job: Job) -> str:
        job.emit("first")
        job.emit("second")
        return "ok"

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        assert (await client.post("/predict", json=predict_body())).status_code == 202
        await finished(gateway)

    gateway = run(handler, scenario, gateway=FakeGateway(answers=[503, 429, 200, 502]))
    assert [r.body for r in gateway.reports] == [
        {"data": "first"},
        {"data": "first"},
        {"data": "first"},
        {"data": "second"},
        {"data": "second"},
        {"status": "COMPLETED", "result": "ok"},
    ]


def test_a_refused_report_is_not_retried_and_a_409_marks_the_job_cancelled() -> None:
    seen: list[Job] = []
    proceed = asyncio.Event()

    async def handler(job: Job) -> str:
        seen.append(job)
        job.progress(50)
        await proceed.wait()
        return "ignored by the gateway"

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        assert (await client.post("/predict", json=predict_body())).status_code == 202
        while not gateway.reports:
            await asyncio.sleep(0)
        while not seen[0].cancelled:
            await asyncio.sleep(0)
        proceed.set()
        await finished(gateway)

    gateway = run(handler, scenario, gateway=FakeGateway(answers=[409]))
    assert [r.body["status"] for r in gateway.reports] == ["PROCESSING", "COMPLETED"]


def test_progress_waiting_to_be_sent_is_replaced_by_the_latest() -> None:
    sent: list[bytes] = []
    gate = asyncio.Event()

    async def send(report: backend_reports.Report) -> None:
        await gate.wait()
        sent.append(report.body)

    async def main() -> None:
        queue = backend_reports.ReportQueue(send)
        runner = asyncio.create_task(queue.run())
        queue.put(backend_reports.Report.progress({"progress": 1}))
        await asyncio.sleep(0)  # the first is being sent
        for n in (2, 3, 4):
            queue.put(backend_reports.Report.progress({"progress": n}))
        queue.put(backend_reports.Report.output(b'"x"'))
        queue.put(backend_reports.Report.progress({"progress": 5}))
        queue.close(backend_reports.Report.result("r"))
        queue.put(backend_reports.Report.output(b'"too late"'))
        gate.set()
        await runner

    asyncio.run(main())
    assert sent == [
        b'{"progress":1}',
        b'{"progress":4}',
        b'{"data":"x"}',
        b'{"progress":5}',
        b'{"status":"COMPLETED","result":"r"}',
    ]


# -- the other routes, bad input -------------------------------------------------------------------


def test_health_names_the_server_and_the_api_key_guards_predict_and_cancel() -> None:
    async def handler(job: Job) -> None:
        return None

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        health = await client.get("/health")
        assert health.json() == {
            "status": "healthy",
            "model": {"name": "taskgate-backend", "server_id": "gpu-1"},
        }
        assert (await client.post("/predict", json=predict_body())).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.post("/predict", json=predict_body(), headers=wrong)).status_code == 401
        assert (await client.post("/cancel", json={"id": "task_1"})).status_code == 401
        right = {"Authorization": "Bearer k3y"}
        assert (await client.post("/predict", json=predict_body(), headers=right)).status_code == 202
        await finished(gateway)

    run(handler, scenario, server_id="gpu-1", api_key="k3y")


@pytest.mark.parametrize(
    ("body", "details"),
    [
        (b"not json", "The body must be a JSON object"),
        (b"[1]", "The body must be a JSON object"),
        (msgspec.json.encode({**predict_body(), "task_id": None, "id": ""}), "task_id (or id) is required"),
        (msgspec.json.encode({**predict_body(), "callback_url": None}), "callback_url is required"),
        (msgspec.json.encode({**predict_body(), "callback_token": 5}), "callback_token is required"),
        (
            msgspec.json.encode({**predict_body(), "request": {"payload": [1]}}),
            "payload must be a JSON object",
        ),
        (msgspec.json.encode({**predict_body(), "timeout": "soon"}), "timeout must be a number"),
    ],
)
def test_a_bad_predict_body_is_a_400_naming_the_field_and_starts_nothing(body: bytes, details: str) -> None:
    calls: list[Job] = []

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        reply = await client.post("/predict", content=body)
        assert reply.status_code == 400 and reply.json()["error"].startswith(details), reply.json()
        assert backend.running == {} and backend.counts.received == 0

    assert run(calls.append, scenario).reports == [] and calls == []


def test_max_concurrent_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        create_app(lambda job: None, max_concurrent=0)


def test_a_later_attempt_of_a_task_running_here_replaces_it() -> None:
    started: list[str] = []
    first_started, first_cancelled = asyncio.Event(), asyncio.Event()

    async def handler(job: Job) -> str:
        token = job.request.callback_token
        started.append(token)
        if token == "token-old":
            first_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                first_cancelled.set()
                raise
        return token

    async def scenario(client: httpx.AsyncClient, backend: Backend, gateway: FakeGateway) -> None:
        old = predict_body(callback_token="token-old")
        assert (await client.post("/predict", json=old)).status_code == 202
        await first_started.wait()
        assert (await client.post("/predict", json=old)).status_code == 202  # the same attempt again
        new = predict_body(callback_token="token-new")
        assert (await client.post("/predict", json=new)).status_code == 202
        await first_cancelled.wait()
        await finished(gateway)

    gateway = run(handler, scenario)
    assert started == ["token-old", "token-new"]
    assert [(r.token, r.body) for r in gateway.reports] == [
        ("Bearer token-new", {"status": "COMPLETED", "result": "token-new"})
    ]

"""What the sync and the async client put on the wire for the newer routes (both send the same
call for each method), and how they read a task's stream: events typed, a stream that ends
early read again with Last-Event-ID, no chunk twice. A fake gateway (httpx.MockTransport)
answers; nothing leaves the process."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest

from taskgate.async_client import AsyncClient
from taskgate.client import Client
from taskgate.errors import NotFound, TaskgateError, WaitTimeout
from taskgate.models import TaskStatus
from taskgate.streaming import DoneEvent, OutputEvent, SseDecoder, StatusEvent, parse_sse

TASK = {
    "id": "task_1",
    "type": "demo",
    "priority": 1,
    "status": "PENDING",
    "progress": 0,
    "serverId": None,
    "result": None,
    "error": None,
    "attempts": 0,
    "createdAt": 1,
    "updatedAt": 1,
}
SUMMARY = {k: v for k, v in TASK.items() if k not in ("result", "error")}
Handler = Callable[[httpx.Request], httpx.Response]


class Gateway:
    """Answers with `replies` in turn (the last one again after), keeping the requests."""

    def __init__(self, *replies: httpx.Response) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        # A fresh response each time: one is read once, by one client.
        return httpx.Response(reply.status_code, headers=reply.headers, content=reply.read())


def both(gateway: Gateway, action: Callable[[Any], Any]) -> list[Any]:
    """Run `action` with a sync client, then with an async one (awaiting what it returns)."""
    results = []
    with Client("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client:
        results.append(action(client))

    async def run_async() -> Any:
        async with AsyncClient("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client:
            return await action(client)

    results.append(asyncio.run(run_async()))
    return results


def sent(request: httpx.Request) -> tuple[str, str, Any]:
    body = msgspec.json.decode(request.content) if request.content else None
    return request.method, str(request.url).removeprefix("http://gw.test"), body


# -- the newer routes ------------------------------------------------------------------------


def test_list_tasks_sends_its_filters_and_iter_tasks_follows_the_cursor() -> None:
    first = {"tasks": [SUMMARY, {**SUMMARY, "id": "task_2"}], "nextCursor": "abc"}
    last = {"tasks": [{**SUMMARY, "id": "task_3", "status": "FAILED"}], "nextCursor": None}
    gateway = Gateway(httpx.Response(200, json=first), httpx.Response(200, json=last))
    with Client("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client:
        page = client.list_tasks(status="PENDING", limit=2)
        assert [t.id for t in page.tasks] == ["task_1", "task_2"] and page.next_cursor == "abc"
        gateway.replies = [httpx.Response(200, json=first), httpx.Response(200, json=last)]
        every = list(client.iter_tasks(page_size=2))
    assert [t.id for t in every] == ["task_1", "task_2", "task_3"]
    assert every[2].status is TaskStatus.FAILED and every[2].is_finished
    assert [sent(r)[1] for r in gateway.requests] == [
        "/api/tasks?status=PENDING&limit=2",
        "/api/tasks?limit=2",
        "/api/tasks?limit=2&cursor=abc",
    ]


def test_async_iter_tasks_follows_the_cursor_too() -> None:
    first = {"tasks": [SUMMARY], "nextCursor": "abc"}
    last = {"tasks": [{**SUMMARY, "id": "task_2"}], "nextCursor": None}
    gateway = Gateway(httpx.Response(200, json=first), httpx.Response(200, json=last))

    async def run() -> list[str]:
        async with AsyncClient("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client:
            return [task.id async for task in client.iter_tasks(status="FAILED")]

    assert asyncio.run(run()) == ["task_1", "task_2"]
    assert [sent(r)[1] for r in gateway.requests] == [
        "/api/tasks?status=FAILED",
        "/api/tasks?status=FAILED&cursor=abc",
    ]


@pytest.mark.parametrize(
    ("action", "reply", "expected"),
    [
        (lambda c: c.queue_stats(), {"pending": 3, "pendingByPriority": [{"priority": 5, "count": 3}], "processing": 1, "capacity": 4}, ("GET", "/api/stats/queue", None)),
        (lambda c: c.webhook_deliveries("task_1"), {"taskId": "task_1", "webhook": None, "deliveries": []}, ("GET", "/api/task/task_1/webhooks", None)),
        (lambda c: c.rotate_server_token("gpu 1"), {"serverId": "gpu 1", "token": "t2"}, ("POST", "/api/servers/gpu%201/token", None)),
        (lambda c: c.set_maintenance("gpu-1", False), {"message": "m", "serverId": "gpu-1", "status": "online", "maintenanceReason": None}, ("POST", "/api/servers/gpu-1/maintenance", {"maintenance": False})),
        (lambda c: c.unregister_server("gpu-1"), {"message": "Server unregistered", "serverId": "gpu-1"}, ("DELETE", "/api/servers/gpu-1", None)),
        (lambda c: c.update_task("task_1", status="PROCESSING", progress=40, message="m"), TASK, ("PUT", "/api/task/task_1", {"status": "PROCESSING", "progress": 40, "message": "m"})),
        (lambda c: c.append_output("task_1", [1, "x"]), {"taskId": "task_1", "index": 0}, ("POST", "/api/task/task_1/output", {"data": [1, "x"]})),
        (lambda c: c.register_server("n", {"predict": "http://b/p", "health": "http://b/h"}, max_concurrent=2, groups=["g"]), {"serverId": "s", "message": "m", "token": "t"}, ("POST", "/api/servers", {"name": "n", "endpoints": {"predict": "http://b/p", "health": "http://b/h"}, "maxConcurrent": 2, "groups": ["g"]})),
    ],
)  # fmt: skip
def test_sync_and_async_send_the_same_request_and_read_the_same_reply(
    action: Callable[[Any], Any], reply: dict[str, Any], expected: tuple[str, str, Any]
) -> None:
    gateway = Gateway(httpx.Response(200, json=reply))
    from_sync, from_async = both(gateway, action)
    assert from_sync == from_async
    assert [sent(r) for r in gateway.requests] == [expected, expected]


def test_prefer_wait_is_sent_and_the_task_as_it_stands_is_returned() -> None:
    gateway = Gateway(httpx.Response(200, json={**TASK, "status": "COMPLETED", "result": 7}))
    tasks = both(gateway, lambda c: c.create_task("demo", {}, wait=12.5))
    assert [t.result for t in tasks] == [7, 7]
    for request in gateway.requests:
        assert request.headers["Prefer"] == "wait=12"
        assert request.extensions["timeout"]["read"] == 27.0  # the wait and a margin
        assert msgspec.json.decode(request.content)["async"] is True
    with Client("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client:
        for wrong in (0, 61):
            with pytest.raises(ValueError, match="wait must be from 1 to 60"):
                client.create_task("demo", {}, wait=wrong)
    assert len(gateway.requests) == 2  # refused before anything was sent


def test_an_error_reply_is_the_same_error_from_both_clients() -> None:
    body = {"error": "Not found", "details": "Task not found: task_9"}
    gateway = Gateway(httpx.Response(404, json=body))
    with (
        Client("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client,
        pytest.raises(NotFound) as caught,
    ):
        client.get_task("task_9")

    async def run() -> None:
        async with AsyncClient("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client:
            await client.get_task("task_9")

    with pytest.raises(NotFound) as caught_async:
        asyncio.run(run())
    assert str(caught.value) == str(caught_async.value) == "404 Not found: Task not found: task_9"


# -- the stream ----------------------------------------------------------------------------------


def sse(*events: tuple[str, Any, str | None]) -> bytes:
    text = ""
    for name, data, event_id in events:
        if event_id is not None:
            text += f"id: {event_id}\n"
        text += f"event: {name}\ndata: {msgspec.json.encode(data).decode()}\n\n"
    return text.encode()


RUNNING = {**TASK, "status": "PROCESSING", "progress": 10}
DONE = {**TASK, "status": "COMPLETED", "progress": 100, "result": "ok"}


def stream_reply(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})


def test_a_stream_cut_short_is_read_again_from_the_last_event_and_no_chunk_comes_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("taskgate._following.time.sleep", lambda s: None)
    # The first response ends before `done` (as a Lambda's bounded wait does); the second
    # repeats chunk 1 (a gateway may resend from the id it was given) and finishes.
    first = (
        sse(
            ("status", RUNNING, "s1"),
            ("output", {"index": 0, "data": "a"}, "o0"),
            ("output", {"index": 1, "data": {"b": 1}}, "o1"),
        )
        + b"retry: 0\n\n"
    )
    second = sse(
        ("output", {"index": 1, "data": {"b": 1}}, "o1"),
        ("output", {"index": 2, "data": None}, "o2"),
        ("done", DONE, "d"),
    )
    gateway = Gateway(stream_reply(first), stream_reply(second))  # fmt: skip
    with Client("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client:
        events = list(client.stream("task_1"))

    assert [type(e) for e in events] == [StatusEvent, OutputEvent, OutputEvent, OutputEvent, DoneEvent]
    assert [(e.index, e.data) for e in events if isinstance(e, OutputEvent)] == [
        (0, "a"),
        (1, {"b": 1}),
        (2, None),
    ]
    assert isinstance(events[-1], DoneEvent) and events[-1].task.result == "ok"
    first_request, again = gateway.requests
    assert first_request.url.path == again.url.path == "/api/task/task_1/stream"
    assert "Last-Event-ID" not in first_request.headers
    assert again.headers["Last-Event-ID"] == "o1"
    assert first_request.headers["Accept"] == "text/event-stream"


def test_output_and_follow_read_the_stream_to_its_end_in_both_clients() -> None:
    body = sse(("status", RUNNING, "1"), ("output", {"index": 0, "data": "x"}, "2"), ("done", DONE, "3"))
    gateway = Gateway(stream_reply(body))
    with Client("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client:
        assert list(client.output("task_1")) == ["x"]
        seen: list[Any] = []
        task = client.follow("task_1", on_progress=lambda t: seen.append(t.status), on_output=seen.append)
    assert task.status is TaskStatus.COMPLETED
    assert seen == [TaskStatus.PROCESSING, OutputEvent(0, "x"), TaskStatus.COMPLETED]

    async def run() -> tuple[list[Any], Any]:
        async with AsyncClient("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client:
            chunks = [chunk async for chunk in client.output("task_1")]
            return chunks, await client.follow("task_1")

    chunks, task = asyncio.run(run())
    assert chunks == ["x"] and task.result == "ok"


def test_a_stream_that_never_finishes_gives_up_at_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("taskgate._following.time.monotonic", lambda: clock[0])

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr("taskgate._following.time.sleep", sleep)
    running = sse(("status", RUNNING, "1")) + b"retry: 2000\n\n"
    gateway = Gateway(stream_reply(running))
    gateway.replies.append(stream_reply(running))

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            return gateway(request)
        return httpx.Response(200, json=RUNNING)

    with (
        Client("http://gw.test", "tok", transport=httpx.MockTransport(answer)) as client,
        pytest.raises(WaitTimeout) as caught,
    ):
        for _ in client.stream("task_1", timeout=5):
            pass
    assert caught.value.task.status is TaskStatus.PROCESSING
    assert len(gateway.requests) == 3  # at 0, 2 and 4 s; the deadline passes at the third's end
    assert {r.headers["Last-Event-ID"] for r in gateway.requests[1:]} == {"1"}


def test_a_stream_refused_is_the_error_of_its_reply() -> None:
    body = {"error": "Not found", "details": "Task not found: task_1"}
    gateway = Gateway(httpx.Response(404, json=body))
    with Client("http://gw.test", "tok", transport=httpx.MockTransport(gateway)) as client:
        with pytest.raises(NotFound):
            next(client.stream("task_1"))
        bad = Gateway(stream_reply(b"event: done\ndata: {not json}\n\n"))
        with (
            Client("http://gw.test", "tok", transport=httpx.MockTransport(bad)) as other,
            pytest.raises(TaskgateError, match="Unexpected reply"),
        ):
            list(other.stream("task_1"))


def test_the_sse_decoder_follows_the_format_rules() -> None:
    lines = [
        ": a comment",
        "id: 7",
        "event: output",
        'data: {"index": 0,',
        'data:  "data": 1}',
        "unknown: field",
        "",
        "retry: 1500",
        "",
        "",  # a blank line with nothing pending is no event
        "event: status",
        "data: cut off by the end of the stream",
    ]
    events = list(parse_sse(lines))
    assert [(e.event, e.data, e.id, e.retry_ms) for e in events] == [
        ("output", '{"index": 0,\n "data": 1}', "7", None),
        ("", "", None, 1500),
    ]
    assert SseDecoder().feed("data: x\r\n") is None


def test_overview_sends_its_range_and_reads_the_whole_page() -> None:
    top = [{"serverId": "gpu-1", "tasksProcessed": 3, "successRate": 1.0}]
    day = {
        "date": "2026-12-04",
        "created": 3,
        "completed": 3,
        "failed": 0,
        "cancelled": 0,
        "retried": 0,
        "averageTime": 9,
    }
    body = {
        "generatedAt": 5,
        "queue": {"pending": 0, "pendingByPriority": [], "processing": 0, "capacity": 10},
        "tasks": {"tasks": [SUMMARY], "nextCursor": None},
        "servers": None,
        "stats": {
            "start": "2026-12-04", "end": "2026-12-04", "totalTasks": 3, "successfulTasks": 3, "failedTasks": 0,
            "retriedTasks": 0, "averageProcessingTime": 9, "topServers": top, "daily": [day], "hourly": None,
        },
        "loadBalancer": {"algorithm": "p2c", "serverDistribution": {}, "totalActiveTasks": 0, "averageLoad": 0},
    }  # fmt: skip
    gateway = Gateway(httpx.Response(200, json=body))
    from_sync, from_async = both(
        gateway, lambda c: c.overview(status="PENDING", limit=5, days=7, end=datetime.date(2026, 12, 4))
    )
    assert from_sync == from_async
    assert from_sync.servers is None and from_sync.stats.daily[0].completed == 3
    assert from_sync.tasks.tasks[0].id == "task_1" and from_sync.load_balancer.algorithm == "p2c"
    assert {sent(r)[1] for r in gateway.requests} == {
        "/api/overview?status=PENDING&limit=5&days=7&end=2026-12-04"
    }


def test_get_task_json_is_the_task_as_the_gateway_sent_it() -> None:
    body = {**TASK, "history": [], "queue": None, "aFieldOfANewerGateway": {"x": 1}}
    gateway = Gateway(httpx.Response(200, json=body))
    from_sync, from_async = both(gateway, lambda c: c.get_task_json("task_1"))
    assert from_sync == from_async == body
    assert {sent(r)[1] for r in gateway.requests} == {"/api/task/task_1"}

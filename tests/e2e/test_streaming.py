"""Streamed output, `Prefer: wait` and per-attempt history end to end, on `taskgate serve` and
on `taskgate dev --aws` (the Lambda code path, where a stream response is bounded and the
reader reconnects with Last-Event-ID).

The backend here is a mock in async mode that holds each task (it would call back only after
a minute): the test speaks for it with the task's callback token, so it decides when each
chunk arrives and when the task ends.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fleet import DEPLOYMENTS, Fleet, Gateway, Mock, start_gateway
from .sse import Stream as SseStream
from .sse import follow, read

HOLD = Mock(mode="async", delay_ms=60_000)
# Small limits, so a test reaches them with a few requests; a short bounded wait on dev --aws,
# so a stream there spans several responses.
SETTINGS = {
    "OUTPUT_CHUNK_MAX_BYTES": 200,
    "OUTPUT_TASK_MAX_BYTES": 500,
    "STREAM_WAIT_S": 2,
    "SYNC_WAIT_MAX": 3,
    "MAX_ATTEMPTS": 2,
}


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(
        tmp_path_factory.mktemp(request.param), request.param, spares=2, **SETTINGS
    ) as gateway:
        yield gateway


@pytest.fixture
def fleet(gateway: Gateway) -> Iterator[Fleet]:
    with Fleet(gateway) as fleet:
        yield fleet


def running_task(fleet: Fleet) -> tuple[str, str]:
    """A task PROCESSING on a held backend, and its callback token."""
    if not fleet.backends:
        fleet.add(HOLD)
    task_id = fleet.submit()
    task = fleet.wait_status(task_id, "PROCESSING", timeout=10 * fleet.gateway.patience)
    return task_id, fleet.api.callback(task["serverId"], task_id, task["attempts"])


def append(fleet: Fleet, task_id: str, token: str, data: Any, expect: int = 200) -> dict[str, Any]:
    reply = fleet.api.post(f"/api/task/{task_id}/output", json={"data": data}, token=token)
    if expect == 200:
        body: dict[str, Any] = reply.ok()
        return body
    return reply.error(expect)


def test_a_reader_gets_every_chunk_in_order_then_done(fleet: Fleet) -> None:
    gateway = fleet.gateway
    # GIVEN a running task with two chunks already out
    task_id, token = running_task(fleet)
    assert append(fleet, task_id, token, {"line": "first"}) == {"taskId": task_id, "index": 0}
    append(fleet, task_id, token, "second")

    # WHEN its owner follows the stream while two more chunks arrive and the task completes
    stream, reader = follow(gateway.base, task_id, fleet.owner)
    bounded = gateway.deployment != "serve"
    stream.wait_for(2, "output", timeout=10 * gateway.patience)
    if bounded:  # the next chunk arrives after the first response ended (STREAM_WAIT_S)
        stream.wait_reconnected(2, timeout=10 * gateway.patience)
    append(fleet, task_id, token, [3])
    stream.wait_for(3, "output", timeout=10 * gateway.patience)
    if bounded:
        stream.wait_reconnected(3, timeout=10 * gateway.patience)
    append(fleet, task_id, token, None)
    done = {"status": "COMPLETED", "result": {"frames": 4}}
    fleet.api.put(f"/api/task/{task_id}", json=done, token=token).ok()
    reader.join(timeout=30 * gateway.patience)
    assert not reader.is_alive()

    # THEN it got every chunk once, in order, with its index as the event id, then `done`
    outputs = stream.of("output")
    assert [e.data for e in outputs] == [
        {"index": 0, "data": {"line": "first"}},
        {"index": 1, "data": "second"},
        {"index": 2, "data": [3]},
        {"index": 3, "data": None},
    ]
    assert [e.id for e in outputs] == ["0", "1", "2", "3"]
    assert stream.events[-1].kind == "done"
    assert stream.events[-1].data["status"] == "COMPLETED" and stream.events[-1].data["result"] == {
        "frames": 4
    }
    statuses = stream.of("status")
    assert statuses and statuses[0].data["status"] == "PROCESSING"
    if gateway.deployment == "serve":
        # One machine: one response, open until done, no reconnect hint needed
        assert stream.responses == [(200, None)] and stream.retry_ms is None
    else:
        # AWS: bounded responses; each reconnect resumed after the last chunk it had
        assert stream.retry_ms == 1000 and len(stream.responses) >= 3
        assert all(status == 200 for status, _ in stream.responses)
        asked = [last for _, last in stream.responses[1:]]
        assert asked == sorted(asked, key=lambda last: -1 if last is None else int(last))


def test_last_event_id_resumes_after_the_chunk_the_reader_has(fleet: Fleet) -> None:
    # GIVEN a finished task with three chunks
    task_id, token = running_task(fleet)
    for n in range(3):
        append(fleet, task_id, token, {"n": n})
    fleet.api.put(
        f"/api/task/{task_id}", json={"status": "FAILED", "error": "out of memory"}, token=token
    ).ok()

    # WHEN a reader that has chunk 0 reconnects
    stream = read(fleet.gateway.base, task_id, fleet.owner, SseStream(), last_id="0", timeout=30)

    # THEN it gets chunks 1 and 2, then done with the failure, and no status event (finished)
    assert [e.kind for e in stream.events] == ["output", "output", "done"]
    assert [e.data["index"] for e in stream.of("output")] == [1, 2]
    assert stream.events[-1].data["status"] == "FAILED"
    # AND a malformed Last-Event-ID is a 400, another user's task a 404
    headers = {"Last-Event-ID": "one"}
    fleet.api.get(f"/api/task/{task_id}/stream", token=fleet.owner, headers=headers).error(
        400, "Invalid request"
    )
    fleet.api.get(f"/api/task/{task_id}/stream", token=fleet.api.user()).error(404, "Not found")


def test_output_limits_and_who_may_append(fleet: Fleet) -> None:
    # GIVEN a running task
    task_id, token = running_task(fleet)

    # THEN a chunk over OUTPUT_CHUNK_MAX_BYTES is 413 and stores nothing
    append(fleet, task_id, token, "x" * 300, expect=413)
    # AND chunks are accepted until the task's total would pass OUTPUT_TASK_MAX_BYTES
    for n in range(3):
        assert append(fleet, task_id, token, "y" * 150)["index"] == n
    details = append(fleet, task_id, token, "z" * 150, expect=413)
    assert "500" in details
    # AND the owner, another server's token and a missing body field are refused
    append(fleet, task_id, fleet.owner, 1, expect=403)
    other = fleet.api.callback("someone-else", task_id, 1)
    append(fleet, task_id, other, 1, expect=409)
    fleet.api.post(f"/api/task/{task_id}/output", json={"chunk": 1}, token=token).error(
        400, "Invalid request"
    )
    # AND once the task is cancelled, output is a 409
    fleet.cancel(task_id)
    append(fleet, task_id, token, "late", expect=409)
    stream = read(fleet.gateway.base, task_id, fleet.owner, SseStream(), timeout=30)
    assert len(stream.of("output")) == 3 and stream.events[-1].data["status"] == "CANCELLED"


def test_prefer_wait_returns_the_task_when_it_ends_or_as_it_stands(fleet: Fleet) -> None:
    api = fleet.api
    fleet.add(Mock(mode="sync", delay_ms=50))

    # WHEN a task that a backend finishes quickly is created with Prefer: wait=3
    reply = api.post("/api/task", json=fleet.body(), token=fleet.owner, headers={"Prefer": "wait=3"})

    # THEN the reply is the finished task, and says the wait applied
    task = reply.ok()
    assert task["status"] == "COMPLETED" and task["result"] is not None
    assert reply.response.headers["preference-applied"] == "wait=3"
    assert [(h["attempt"], h["outcome"]) for h in task["history"]] == [(1, "completed")]

    # WHEN a task no server can take is created asking for more than SYNC_WAIT_MAX (3 s)
    held = {**fleet.body(), "capabilities": ["nobody-has-this"]}
    waited = api.post("/api/task", json=held, token=fleet.owner, headers={"Prefer": "respond-async, wait=60"})

    # THEN the wait is capped and the reply is the task as it stands
    pending = waited.ok()
    assert pending["status"] == "PENDING" and pending["queue"]["reason"] == "no_capable_server"  # as GET
    assert waited.response.headers["preference-applied"] == "wait=3"
    for bad in ("wait=0", "wait=61", "wait=soon"):
        api.post("/api/task", json=held, token=fleet.owner, headers={"Prefer": bad}).error(
            400, "Invalid request"
        )


def test_history_names_each_attempt_and_never_a_url(fleet: Fleet) -> None:
    # GIVEN a backend that always fails (MAX_ATTEMPTS=2)
    (backend,) = fleet.add(Mock(mode="sync", fail_rate=1.0))

    # WHEN a task runs out of attempts
    task_id = fleet.submit()
    task = fleet.wait_status(task_id, "FAILED", timeout=15 * fleet.gateway.patience)

    # THEN each attempt is there, ended, failed, naming the server and no address
    history = task["history"]
    assert [(h["attempt"], h["serverId"], h["outcome"]) for h in history] == [
        (1, backend.server_id, "failed"),
        (2, backend.server_id, "failed"),
    ]
    for entry in history:
        assert entry["startedAt"] <= entry["endedAt"]
        assert backend.server_id in entry["error"] and "http" not in json.dumps(entry)


def test_get_root_redirects_to_the_dashboard(gateway: Gateway) -> None:
    reply = httpx.get(f"{gateway.base}/", follow_redirects=False, timeout=10)
    assert reply.status_code == 302 and reply.headers["location"] == "dashboard"
    page = httpx.get(f"{gateway.base}/", follow_redirects=True, timeout=10)
    assert page.status_code == 200 and "dashboard/assets/app.js" in page.text


def test_a_stopping_server_ends_its_open_streams_at_once(tmp_path: Path) -> None:
    # GIVEN `taskgate serve` with a stream open on a task that will not finish
    with start_gateway(tmp_path, "serve", spares=0) as gateway:
        api = gateway.api
        owner = api.user()
        task_id = api.create_task(owner)
        headers = {"Authorization": f"Bearer {owner}"}
        with (
            httpx.Client(base_url=gateway.base, timeout=httpx.Timeout(10.0, read=5.0)) as client,
            client.stream("GET", f"/api/task/{task_id}/stream", headers=headers) as reply,
        ):
            lines = reply.iter_lines()
            assert next(lines) == "event: status"

            # WHEN the server is told to stop
            gateway.proc.send_signal(signal.SIGTERM)

            # THEN the response ends cleanly (no read timeout, no reset) and the server exits
            rest = list(lines)
        assert rest[0].startswith("data: ") and "event: done" not in rest
        gateway.proc.wait(timeout=3)
        assert "Traceback" not in gateway.log.read_text()

"""Task updates over WebSocket, end to end: a real `taskgate serve`, real mock backends doing
the work, and real WebSocket clients (the `websockets` package) on loopback.

GIVEN a subscriber on a task, WHEN a backend picks it up, reports progress and finishes, THEN
the subscriber gets the task as it stood, then every change in order, and nothing after the
terminal state; every message's task is the GET /api/task/{id} body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from .fleet import TERMINAL, Fleet, Gateway, Mock, start_gateway
from .harness import unique

WAIT_S = 10.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("gateway")) as gateway:
        yield gateway


@pytest.fixture
def fleet(gateway: Gateway) -> Iterator[Fleet]:
    with Fleet(gateway) as fleet:
        yield fleet


def ws_url(gateway: Gateway, token: str | None) -> str:
    base = gateway.base.replace("http://", "ws://") + "/ws"
    return base if token is None else f"{base}?token={token}"


def open_ws(gateway: Gateway, token: str) -> ClientConnection:
    return connect(ws_url(gateway, token), open_timeout=WAIT_S, close_timeout=2, max_size=None)


def subscribe(ws: ClientConnection, task_id: str, kind: str = "subscribe") -> None:
    ws.send(json.dumps({"type": kind, "taskId": task_id}))


def receive(ws: ClientConnection, timeout: float = WAIT_S) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return message


def until_terminal(ws: ClientConnection, task_id: str) -> list[dict[str, Any]]:
    """The task bodies received for `task_id`, up to and including its terminal state."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_S * 2
    while not seen or seen[-1]["status"] not in TERMINAL:
        message = receive(ws, timeout=max(0.1, deadline - time.monotonic()))
        assert message["type"] == "task", message
        if message["task"]["id"] == task_id:
            seen.append(message["task"])
    return seen


def assert_silent(ws: ClientConnection) -> None:
    """Nothing is on its way to this connection: a probe (a subscribe to a task that does not
    exist) is answered next. Writes reach every follower's outbox on the server's loop, in
    order, and the probe's answer joins the same outbox after them, so any message already
    due would come first; no waiting is needed to see that none is."""
    probe = unique("probe")
    subscribe(ws, probe)
    assert receive(ws) == not_found(probe)


def progression(bodies: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(status, progress) of each message, repeats of the same pair collapsed."""
    steps: list[tuple[str, int]] = []
    for body in bodies:
        step = (body["status"], body["progress"])
        if not steps or steps[-1] != step:
            steps.append(step)
    return steps


def not_found(task_id: str) -> dict[str, Any]:
    return {"type": "error", "error": "Not found", "details": f"Task not found: {task_id}"}


def test_snapshot_first_then_every_change_in_order(fleet: Fleet) -> None:
    # GIVEN a task waiting for a server (none has its capability yet) and its owner subscribed
    task_id = fleet.submit()
    with open_ws(fleet.gateway, fleet.owner) as ws:
        subscribe(ws, task_id)
        snapshot = receive(ws)
        assert snapshot == {"type": "task", "task": fleet.task(task_id)}
        assert snapshot["task"]["status"] == "PENDING"

        # WHEN an async backend takes it, reports 20/40/60/80 and completes
        fleet.add(Mock(mode="async", delay_ms=1000, progress_steps=4))
        bodies = [snapshot["task"], *until_terminal(ws, task_id)]

        # THEN every state arrives, in order, and the last one is what GET returns
        assert progression(bodies) == [
            ("PENDING", 0),
            ("PROCESSING", 0),
            ("PROCESSING", 20),
            ("PROCESSING", 40),
            ("PROCESSING", 60),
            ("PROCESSING", 80),
            ("COMPLETED", 100),
        ], bodies
        updated = [body["updatedAt"] for body in bodies]
        assert updated == sorted(updated)
        assert bodies[-1] == fleet.task(task_id)
        assert bodies[-1]["result"]["taskId"] == task_id
        # and nothing more is sent for a finished task
        assert_silent(ws)
    fleet.assert_settled()


def test_a_finished_task_sends_its_state_once(fleet: Fleet) -> None:
    fleet.add(Mock())
    task_id = fleet.submit()
    done = fleet.wait_terminal()[task_id]
    with open_ws(fleet.gateway, fleet.owner) as ws:
        subscribe(ws, task_id)
        assert receive(ws) == {"type": "task", "task": done}
        assert_silent(ws)


def test_another_users_task_is_exactly_like_an_unknown_one(fleet: Fleet) -> None:
    api = fleet.api
    task_id = fleet.submit()
    unknown = f"task_{unique('nope').replace('-', '')}"
    with open_ws(fleet.gateway, api.user()) as ws:
        subscribe(ws, task_id)
        theirs = receive(ws)
        subscribe(ws, unknown)
        missing = receive(ws)
    assert theirs == not_found(task_id)
    assert missing == not_found(unknown)
    # nothing but the id tells them apart
    assert theirs["details"].replace(task_id, "ID") == missing["details"].replace(unknown, "ID")


def test_an_admin_may_follow_anyones_task(fleet: Fleet) -> None:
    task_id = fleet.submit()
    with open_ws(fleet.gateway, fleet.api.admin) as ws:
        subscribe(ws, task_id)
        assert receive(ws)["task"]["status"] == "PENDING"
        fleet.add(Mock(mode="async", delay_ms=300, progress_steps=1))
        assert [body["status"] for body in until_terminal(ws, task_id)][-1] == "COMPLETED"


def test_a_backend_token_may_not_follow_the_task_it_runs(fleet: Fleet) -> None:
    (backend,) = fleet.add(Mock(mode="async", delay_ms=5000, progress_steps=0))
    task_id = fleet.submit()
    fleet.wait_status(task_id, "PROCESSING")
    with open_ws(fleet.gateway, fleet.api.service(backend.server_id)) as ws:
        subscribe(ws, task_id)
        assert receive(ws) == not_found(task_id)
    fleet.cancel(task_id)


@pytest.mark.parametrize(
    ("token", "details"),
    [
        (None, "Missing token: connect with ?token=<JWT>"),
        ("not-a-jwt", "Invalid or expired token"),
        ("expired", "Token expired"),
        ("wrong-secret", "Invalid or expired token"),
    ],
)
def test_a_bad_token_is_refused_before_the_upgrade(gateway: Gateway, token: str | None, details: str) -> None:
    from core.domain import auth

    if token == "expired":
        token = gateway.api.token("user", ttl_s=-60)
    elif token == "wrong-secret":
        token = auth.mint("another-secret-" * 4, sub="mallory", roles=["admin"], ttl_s=600)
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(gateway, token), open_timeout=WAIT_S)
    response = refused.value.response
    assert response.status_code == 401
    assert json.loads(response.body or b"") == {"error": "Unauthorized", "details": details}


@pytest.mark.parametrize(
    ("message", "details"),
    [
        ("{not json", "Message is not valid JSON"),
        ('["subscribe"]', "Message must be a JSON object"),
        ('{"taskId": "task_1"}', "Missing required field: type"),
        (
            '{"type": "watch", "taskId": "task_1"}',
            "Invalid value for field: type (use subscribe or unsubscribe)",
        ),
        ('{"type": "subscribe"}', "Missing required field: taskId"),
        ('{"type": "subscribe", "taskId": 7}', "Invalid type for field: taskId (expected a string)"),
        ('{"type": "subscribe", "taskId": "task_1", "since": 3}', "Unknown field: since"),
        (
            '{"type": "subscribe", "taskId": "../etc"}',
            "Invalid task id: use 1-128 characters from A-Z, a-z, 0-9, '_' and '-'",
        ),
    ],
)
def test_a_bad_message_gets_an_error_and_the_connection_goes_on(
    fleet: Fleet, message: str, details: str
) -> None:
    task_id = fleet.submit()
    with open_ws(fleet.gateway, fleet.owner) as ws:
        ws.send(message)
        assert receive(ws) == {"type": "error", "error": "Bad request", "details": details}
        subscribe(ws, task_id)
        assert receive(ws)["task"]["id"] == task_id


def test_several_subscribers_and_several_tasks_each(fleet: Fleet) -> None:
    first, second = fleet.submit(), fleet.submit()
    with (
        open_ws(fleet.gateway, fleet.owner) as both,
        open_ws(fleet.gateway, fleet.owner) as only_first,
        open_ws(fleet.gateway, fleet.api.admin) as left,
    ):
        subscribe(both, first)
        subscribe(both, second)
        subscribe(only_first, first)
        subscribe(left, first)
        snapshots = [receive(both), receive(both), receive(only_first), receive(left)]
        assert [s["task"]["id"] for s in snapshots] == [first, second, first, first]
        subscribe(left, first, "unsubscribe")

        fleet.add(Mock(mode="async", delay_ms=600, progress_steps=2))
        seen: dict[str, list[dict[str, Any]]] = {first: [], second: []}
        while any(not bodies or bodies[-1]["status"] not in TERMINAL for bodies in seen.values()):
            task = receive(both)["task"]
            seen[task["id"]].append(task)
        alone = until_terminal(only_first, first)

        assert alone == seen[first]
        for task_id, bodies in seen.items():
            assert progression(bodies) == [
                ("PROCESSING", 0),
                ("PROCESSING", 33),
                ("PROCESSING", 66),
                ("COMPLETED", 100),
            ], (task_id, bodies)
        # the unsubscribed connection got nothing after its snapshot
        assert_silent(left)
    fleet.assert_settled()


def test_a_client_that_never_reads_is_dropped_and_stalls_nothing(fleet: Fleet) -> None:
    # GIVEN a finished task whose result is large (the mock echoes the payload: ~200 KB)
    fleet.add(Mock(mode="async", delay_ms=900, progress_steps=2))
    big = fleet.submit(payload={"blob": "x" * 200_000})
    fleet.wait_terminal([big])
    with open_ws(fleet.gateway, fleet.owner) as stalled:
        # WHEN one client asks for it over and over and never reads (~40 MB of snapshots)
        for _ in range(200):
            subscribe(stalled, big)

        # THEN dispatch goes on: a task is taken, progresses and finishes, and another
        # subscriber sees all of it
        task_id = fleet.submit()
        with open_ws(fleet.gateway, fleet.owner) as reader:
            subscribe(reader, task_id)
            bodies = [receive(reader)["task"], *until_terminal(reader, task_id)]
        assert progression(bodies)[-3:] == [("PROCESSING", 33), ("PROCESSING", 66), ("COMPLETED", 100)]

        # and the stalled client was dropped: it gets part of what it asked for, then the close
        received = 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                message = receive(stalled)
                assert message["task"]["id"] == big
                received += 1
        assert 0 < received < 200
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    fleet.assert_settled()


def test_a_subscriber_gets_each_chunk_of_streamed_output(fleet: Fleet) -> None:
    # GIVEN a task held PROCESSING by its backend, and its owner subscribed
    fleet.add(Mock(mode="async", delay_ms=60_000))
    task_id = fleet.submit()
    task = fleet.wait_status(task_id, "PROCESSING", timeout=WAIT_S)
    token = fleet.api.callback(task["serverId"], task_id, task["attempts"])
    with open_ws(fleet.gateway, fleet.owner) as ws:
        subscribe(ws, task_id)
        assert receive(ws)["type"] == "task"

        # WHEN the backend appends two chunks
        for data in ({"word": "hello"}, ["world"]):
            fleet.api.post(f"/api/task/{task_id}/output", json={"data": data}, token=token).ok()

        # THEN each arrives as an output message, in order
        assert [receive(ws), receive(ws)] == [
            {"type": "output", "taskId": task_id, "index": 0, "data": {"word": "hello"}},
            {"type": "output", "taskId": task_id, "index": 1, "data": ["world"]},
        ]


def test_the_connection_ends_when_its_token_expires(fleet: Fleet) -> None:
    """Security review, finding 5: an open WebSocket outlived its token's `exp`."""
    # GIVEN a task held PENDING, and a connection whose token expires in 2 s
    api = fleet.api
    sub = unique("expiring")
    task_id = api.create_task(api.token("user", sub))
    token = api.token("user", sub, ttl_s=2)
    expires = json.loads(_b64_claims(token))["exp"]
    with open_ws(fleet.gateway, token) as ws:
        subscribe(ws, task_id)
        assert receive(ws)["task"]["id"] == task_id
        # WHEN the token's exp passes, THEN the server closes the connection with 4401
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=WAIT_S)
        assert time.time() >= expires - 0.05  # not before its time (clock granularity)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert "Token expired" in closed.value.rcvd.reason


def _b64_claims(token: str) -> str:
    import base64

    payload = token.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()

"""Rate limits over HTTP, against real `taskgate serve` processes started with small limits.

Windows are fixed minutes of the wall clock, so a test that counts requests first waits out
the current minute when it is about to end (at most a few seconds, rarely).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.local.sqlite import SqliteStore

from .harness import (
    EXAMPLE_COMPLETED,
    EXAMPLE_HEARTBEAT,
    EXAMPLE_SERVER,
    EXAMPLE_TASK,
    HELD,
    SECRET,
    Api,
    Reply,
    _free_port,
    _wait_healthy,
    unique,
)

LIMITS = {
    "RATE_LIMIT_TASK_CREATE": "50",
    "RATE_LIMIT_SERVER_REGISTER": "3",
    "RATE_LIMIT_SERVICE": "10",
    "RATE_LIMIT_DEFAULT": "20",
}
HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
# Stays PENDING: no server has the HELD capability.
TASK = {**EXAMPLE_TASK, "capabilities": [HELD]}
# A health check runs in `serve` and would contact the endpoints: loopback only, nothing there.
LOOPBACK_ENDPOINTS = {name: f"http://127.0.0.1:9/{name}" for name in ("predict", "health", "metrics")}


def start_serve(tmp: Path, limits: dict[str, str]) -> Iterator[Api]:
    db, log_path, port = tmp / "t.db", tmp / "serve.log", _free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "serve", "--db", str(db), "--port", str(port)],
            env={**os.environ, "JWT_SECRET": SECRET, **limits},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_healthy(proc, base, log_path)
            store = SqliteStore(str(db))
            with httpx.Client(base_url=base, timeout=10.0) as client:
                yield Api("serve", client, store, SECRET)
            store.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# Takes the place of conftest's `api` (both deployments, limits off) in this module.
@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from start_serve(tmp_path_factory.mktemp("limited"), LIMITS)


@pytest.fixture(scope="module")
def default_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from start_serve(tmp_path_factory.mktemp("default-off"), {**LIMITS, "RATE_LIMIT_DEFAULT": "0"})


def fresh_window(margin_s: float = 8.0) -> None:
    """Return at once, or after the current minute ends if fewer than margin_s are left."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.1)


def rate(reply: Reply) -> tuple[int, int, int]:
    """(limit, remaining, reset) from a reply's headers, which must all be there."""
    missing = [name for name in HEADERS if name not in reply.headers]
    assert not missing, f"{reply.status_code} reply lacks {missing}: {dict(reply.headers)}"
    limit, remaining, reset = (int(reply.headers[name]) for name in HEADERS)
    return limit, remaining, reset


def has_no_rate_headers(reply: Reply) -> bool:
    return not any(name in reply.headers for name in HEADERS)


def assert_refused(reply: Reply, limit: int, words: str) -> None:
    details = reply.error(429, "Too many requests", mentions=(f"Rate limit of {limit} ", words))
    retry_after = int(reply.headers["retry-after"])
    # Sliding windows: until enough of the past minute has slid out, at most two windows away.
    assert 1 <= retry_after <= 120, reply.headers
    assert f"retry after {retry_after} s" in details
    got_limit, remaining, reset = rate(reply)
    assert (got_limit, remaining) == (limit, 0)
    assert 0 < reset - time.time() <= 61, reset  # the end of the current window


def parallel_posts(api: Api, path: str, token: str, body: Any, n: int) -> list[Reply]:
    """n requests at once, each on its own connection."""
    base = str(api.client.base_url)

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) as client:
            headers = {"Authorization": f"Bearer {token}"}
            return list(
                await asyncio.gather(*(client.post(path, json=body, headers=headers) for _ in range(n)))
            )

    return [Reply(response) for response in asyncio.run(send_all())]


def test_100_parallel_task_creations_let_exactly_50_through(api: Api) -> None:
    # GIVEN a user, and a limit of 50 task creations a minute
    fresh_window(margin_s=15)
    user = unique("user")
    token = api.token("user", user)

    # WHEN the user sends 100 at once
    replies = parallel_posts(api, "/api/task", token, TASK, 100)

    # THEN exactly 50 are created, each telling how many are left, and 50 are refused
    created = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    assert (len(created), len(refused)) == (50, 50), sorted(r.status_code for r in replies)
    assert sorted(rate(r)[1] for r in created) == list(range(50))
    assert {rate(r)[0] for r in replies} == {50}
    assert len({rate(r)[2] for r in replies}) == 1
    for reply in refused:
        assert_refused(reply, 50, "task creation")
    # and a refused request changed nothing
    assert len(api.store.tasks_by_owner(user, limit=200)) == 50

    # WHEN another user creates a task, and the first one reads one of theirs
    other = api.post("/api/task", json=TASK, token=api.user())
    read = api.get(f"/api/task/{created[0].json()['id']}", token=token)

    # THEN neither is affected: the other user has their own window, reads another bucket
    other.ok()
    assert rate(other)[:2] == (50, 49)
    read.ok()
    assert rate(read)[:2] == (20, 19)


def test_every_authenticated_response_carries_the_headers(api: Api) -> None:
    # GIVEN a user with a task, and a limit of 20 other requests a minute
    fresh_window()
    token = api.user()
    task_id = api.create_task(token)

    # WHEN they read it, read an unknown task, send a malformed id, and ask for admin routes
    replies = [
        api.get(f"/api/task/{task_id}", token=token),
        api.get("/api/task/task_abc123", token=token),
        api.get(f"/api/task/{'x' * 129}", token=token),
        api.get("/api/servers", token=token),
        api.post(f"/api/task/{task_id}/retry", token=token),
    ]

    # THEN each reply (200, 404, 400, 403, 409) has the headers, remaining counting down
    assert [r.status_code for r in replies] == [200, 404, 400, 403, 409]
    assert [rate(r)[:2] for r in replies] == [(20, 19), (20, 18), (20, 17), (20, 16), (20, 15)]
    assert len({rate(r)[2] for r in replies}) == 1
    reset = rate(replies[0])[2]
    assert reset % 60 == 0 and 0 < reset - time.time() <= 60

    # WHEN they use up the rest of the window
    more = [api.get(f"/api/task/{task_id}", token=token) for _ in range(15)]
    refused = api.get(f"/api/task/{task_id}", token=token)

    # THEN the 21st request is refused
    assert [rate(r)[1] for r in more] == list(range(14, -1, -1))
    assert_refused(refused, 20, "API requests")
    # while a task creation (its own bucket) and a malformed body (400) still count there
    bad = api.post("/api/task", json={"type": "x"}, token=token)
    bad.error(400)
    assert rate(bad)[:2] == (50, 48)


def test_task_creation_refused_over_the_limit_is_not_created(api: Api) -> None:
    # GIVEN a user who has created 50 tasks this minute
    fresh_window(margin_s=15)
    user = unique("user")
    token = api.token("user", user)
    for _ in range(50):
        api.post("/api/task", json=TASK, token=token).ok()

    # WHEN they create one more
    refused = api.post("/api/task", json=TASK, token=token)

    # THEN it is refused and not stored
    assert_refused(refused, 50, "task creation")
    assert len(api.store.tasks_by_owner(user, limit=200)) == 50


def test_server_registration_has_its_own_limit(api: Api) -> None:
    # GIVEN an admin, and a limit of 3 registrations a minute
    fresh_window()
    admin = api.token("admin", unique("admin"))

    def register() -> Reply:
        body = {**EXAMPLE_SERVER, "id": unique("srv"), "endpoints": LOOPBACK_ENDPOINTS}
        return api.post("/api/servers", json=body, token=admin)

    # WHEN they register 4 servers
    replies = [register() for _ in range(4)]

    # THEN the 4th is refused, and their other requests are not
    assert [rate(r)[:2] for r in replies[:3]] == [(3, 2), (3, 1), (3, 0)]
    assert_refused(replies[3], 3, "server registration")
    listed = api.get("/api/servers", token=admin)
    assert {s["id"] for s in listed.ok()["servers"]} >= {r.json()["serverId"] for r in replies[:3]}
    assert rate(listed)[:2] == (20, 19)
    for reply in replies[:3]:
        api.store.delete_server(reply.json()["serverId"])


def test_service_principals_share_the_service_limit(api: Api) -> None:
    # GIVEN a registered backend, and a limit of 10 service requests a minute
    fresh_window()
    server_id = api.post(
        "/api/servers",
        json={**EXAMPLE_SERVER, "id": unique("srv"), "endpoints": LOOPBACK_ENDPOINTS},
        token=api.admin,
    ).ok()["serverId"]
    backend = api.service(server_id)

    # WHEN it sends heartbeats and progress reports (here on a task it does not have: 404)
    replies: list[Reply] = []
    for i in range(10):
        if i % 2:
            replies.append(api.put("/api/task/task_abc123", json=EXAMPLE_COMPLETED, token=backend))
        else:
            replies.append(
                api.post(f"/api/servers/{server_id}/heartbeat", json=EXAMPLE_HEARTBEAT, token=backend)
            )
    refused = [
        api.post(f"/api/servers/{server_id}/heartbeat", json=EXAMPLE_HEARTBEAT, token=backend),
        api.put("/api/task/task_abc123", json=EXAMPLE_COMPLETED, token=backend),
    ]

    # THEN all 10 count in one bucket, and the 11th and 12th are refused
    assert [r.status_code for r in replies] == [200, 404] * 5
    assert [rate(r)[:2] for r in replies] == [(10, n) for n in range(9, -1, -1)]
    for reply in refused:
        assert_refused(reply, 10, "service requests")
    api.store.delete_server(server_id)


def test_invalid_tokens_are_401_without_headers_and_not_counted(api: Api) -> None:
    # GIVEN a user, and tokens that claim to be them but do not verify
    fresh_window()
    user = unique("user")
    forged = Api("forger", api.client, api.store, "not-the-secret-" * 4).token("user", user)
    expired = api.token("user", user, ttl_s=-10)

    # WHEN 30 such requests arrive (more than the limit of 20)
    replies = [
        api.get("/api/task/task_abc123", token=token) for token in [forged, expired, "garbage"] * 10
    ] + [api.get("/api/task/task_abc123")]

    # THEN each is a 401 without rate headers, and none counted against the user
    for reply in replies:
        reply.error(401, "Unauthorized")
        assert has_no_rate_headers(reply), dict(reply.headers)
    first = api.get("/api/task/task_abc123", token=api.token("user", user))
    first.error(404)
    assert rate(first)[:2] == (20, 19)


def test_public_routes_have_no_rate_headers(api: Api) -> None:
    health = api.get("/health")
    assert health.status_code == 200
    assert has_no_rate_headers(health)


def test_a_limit_of_0_turns_the_bucket_off(default_off: Api) -> None:
    # GIVEN RATE_LIMIT_DEFAULT=0, other limits on
    fresh_window()
    token = default_off.user()
    task_id = default_off.create_task(token)

    # WHEN the user reads more than any default limit would allow
    replies = [default_off.get(f"/api/task/{task_id}", token=token) for _ in range(120)]

    # THEN none is refused and none carries rate headers
    assert {r.status_code for r in replies} == {200}
    assert all(has_no_rate_headers(r) for r in replies)
    # while task creation is still limited and reported
    created = default_off.post("/api/task", json=TASK, token=token)
    created.ok()
    assert rate(created)[:2] == (50, 48)

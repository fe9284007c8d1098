"""Regression: taskgate never follows a backend's redirect. A predict, health or cancel URL
passes the metadata checks at registration and at call time, but a 3xx answer could point
anywhere (http://169.254.169.254/...); aiohttp follows redirects unless told not to.

GIVEN a loopback backend that answers every call with a 307 or 302 to another loopback path,
WHEN taskgate calls it in both flavours (asyncio on one machine, urllib3 in a Lambda),
THEN the redirect target is never requested and the answer counts as a failed attempt.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import pytest
import urllib3

from core.domain.models import Endpoints, Server, ServerStatus, Task, TaskStatus
from core.domain.protocol import BackendRequest, Kind
from core.http import aio, blocking


class Redirector(BaseHTTPRequestHandler):
    landed: list[str] = []

    def _answer(self) -> None:
        if self.path.startswith("/landing"):
            Redirector.landed.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": "completed", "result": "metadata contents"}')
            return
        self.send_response(307 if self.path.startswith("/predict") else 302)
        self.send_header("Location", f"/landing{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def redirector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def fresh_landings() -> None:
    Redirector.landed.clear()


def server_at(base: str) -> Server:
    endpoints = Endpoints(predict=f"{base}/predict", health=f"{base}/health", cancel=f"{base}/cancel")
    return Server(
        id="srv-redirect",
        name="srv-redirect",
        endpoints=endpoints,
        status=ServerStatus.ONLINE,
        registered_at=0,
    )


def predict_request(base: str) -> BackendRequest:
    return BackendRequest(f"{base}/predict", {"Content-Type": "application/json"}, b"{}", 5.0)


def a_task() -> Task:
    return Task(
        id="task-redirect",
        owner="alice",
        type="t",
        priority=1,
        payload={},
        status=TaskStatus.PROCESSING,
        created_at=0,
        updated_at=0,
        queued_at=0,
    )


def test_the_asyncio_flavour_follows_no_redirect(redirector: str) -> None:
    async def calls() -> None:
        async with aiohttp.ClientSession() as client:
            outcome = await aio.predict_async(client, predict_request(redirector))
            assert outcome.kind is Kind.RETRY, outcome
            assert "307" in (outcome.error or ""), outcome
            healthy, why = await aio.health_async(client, server_at(redirector), 5.0)
            assert not healthy and why == "health answered 302"
            await aio.cancel_async(client, a_task(), server_at(redirector))

    asyncio.run(calls())
    assert Redirector.landed == []


def test_the_lambda_flavour_follows_no_redirect(redirector: str) -> None:
    pool = urllib3.PoolManager()
    outcome = blocking.predict_sync(pool, predict_request(redirector))
    assert outcome.kind is Kind.RETRY and "307" in (outcome.error or ""), outcome
    assert blocking.health_sync(pool, server_at(redirector), 5.0) == (False, "health answered 302")
    blocking.cancel_sync(pool, a_task(), server_at(redirector))
    assert Redirector.landed == []

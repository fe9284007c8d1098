"""Outbound calls connect to the address that was checked (findings 1-3 of the security review).

GIVEN a fake resolver (socket.getaddrinfo replaced: names map to loopback or to refused
addresses, and every lookup is recorded) and a loopback HTTP server that records what reaches
it, WHEN taskgate makes predict, health, cancel and webhook calls through both transports
(urllib3 for Lambda, aiohttp for one machine), THEN:
- a name is resolved once, by the guard, and the call goes to that address (a second lookup,
  as a rebinding attack needs, fails the test: the fake answers only once);
- `Host` carries the original name; HTTPS pools are keyed by (address, name) with the name
  as the TLS server name;
- a refused address (metadata for backends; private for webhooks) is never connected to.
Nothing leaves loopback: refused calls are caught before a socket is opened, and the only
server answering is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest
import urllib3

from core.domain.models import Endpoints, Server, ServerStatus, Task, TaskStatus
from core.domain.protocol import BackendRequest, Kind
from core.domain.urls import WebhookPolicy
from core.http import aio, blocking
from core.services.webhook_delivery import WebhookRequest


class Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str | None]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        Recorder.seen.append((self.command, self.path, self.headers.get("Host")))
        body = b'{"status": "completed", "result": 1}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


class FakeDns:
    """Names answer once each (a second lookup raises and is recorded); IP literals resolve
    as the system would (no network: they are numeric)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = dict(answers)
        self.asked: list[str] = []
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
            return self.real(name, port, *args, **kwargs)
        except OSError:
            pass
        self.asked.append(name)
        if name not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "not in the fake resolver (or asked twice)")
        address = self.answers.pop(name)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns({})
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    Recorder.seen.clear()
    return fake


class NoConnect(urllib3.PoolManager):
    """A pool that records where a connection would go and never opens one."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, int | None]] = []

    def connection_from_host(self, host: str | None, port: int | None = None, *a: Any, **k: Any) -> Any:
        self.asked.append((str(host), port))
        raise AssertionError(f"taskgate would connect to {host}:{port}")


def server(url: str) -> Server:
    return Server(
        id="gpu-1",
        name="gpu-1",
        endpoints=Endpoints(predict=url, health=url, cancel=url),
        status=ServerStatus.ONLINE,
        registered_at=0,
        api_key="k",
    )


TASK = Task(
    id="t-1",
    owner="alice",
    type="t",
    priority=1,
    payload={},
    status=TaskStatus.PROCESSING,
    created_at=0,
    updated_at=0,
    queued_at=0,
)


def test_the_blocking_transport_connects_to_the_checked_address(dns: FakeDns, port: int) -> None:
    pool = urllib3.PoolManager()
    url = f"http://gpu.example:{port}/predict?key=s3cret"
    for call in ("predict", "health", "cancel"):
        dns.answers["gpu.example"] = "127.0.0.1"
        if call == "predict":
            outcome = blocking.predict_sync(pool, BackendRequest(url, {}, b"{}", 5.0, "gpu-1"))
            assert outcome.kind is Kind.COMPLETED, outcome
        elif call == "health":
            assert blocking.health_sync(pool, server(url), 5.0) == (True, None)
        else:
            blocking.cancel_sync(pool, TASK, server(url))
    # Each call: one lookup, by the guard; the client never resolved the name again.
    assert dns.asked == ["gpu.example"] * 3
    assert Recorder.seen == [
        ("POST", "/predict?key=s3cret", f"gpu.example:{port}"),
        ("GET", "/predict?key=s3cret", f"gpu.example:{port}"),
        ("POST", "/predict?key=s3cret", f"gpu.example:{port}"),
    ]


def test_the_asyncio_transport_connects_to_the_checked_address(dns: FakeDns, port: int) -> None:
    url = f"http://gpu.example:{port}/predict"

    async def calls() -> None:
        async with aiohttp.ClientSession() as client:
            dns.answers["gpu.example"] = "127.0.0.1"
            outcome = await aio.predict_async(client, BackendRequest(url, {}, b"{}", 5.0, "gpu-1"))
            assert outcome.kind is Kind.COMPLETED, outcome
            dns.answers["gpu.example"] = "127.0.0.1"
            assert await aio.health_async(client, server(url), 5.0) == (True, None)
            dns.answers["gpu.example"] = "127.0.0.1"
            await aio.cancel_async(client, TASK, server(url))
            dns.answers["hook.example"] = "127.0.0.1"
            request = WebhookRequest(
                f"http://hook.example:{port}/h", {}, b"{}", 5.0, WebhookPolicy(_loopback())
            )
            sent = await aio.send_async(client, request)
            assert (sent.status_code, sent.error) == (200, None)

    asyncio.run(calls())
    assert dns.asked == ["gpu.example"] * 3 + ["hook.example"]
    assert [host for _, _, host in Recorder.seen] == [f"gpu.example:{port}"] * 3 + [f"hook.example:{port}"]


def _loopback() -> tuple[Any, ...]:
    from core.domain.urls import LOOPBACK_NETWORKS

    return LOOPBACK_NETWORKS


def test_a_name_that_rebinds_to_metadata_is_never_called(dns: FakeDns) -> None:
    """The name passed registration; at call time it resolves to the metadata service."""
    pool = NoConnect()
    url = "http://rebinding.example/predict"
    dns.answers["rebinding.example"] = "169.254.169.254"
    outcome = blocking.predict_sync(pool, BackendRequest(url, {}, b"{}", 1.0, "gpu-1"))
    assert outcome.kind is Kind.FAILED
    assert outcome.error == "Server gpu-1: refused: the endpoint resolves to a cloud metadata address"
    dns.answers["rebinding.example"] = "fd00:ec2::254"
    healthy, why = blocking.health_sync(pool, server(url), 1.0)
    assert not healthy and "metadata" in (why or "")
    dns.answers["rebinding.example"] = "::ffff:169.254.169.254"
    blocking.cancel_sync(pool, TASK, server(url))
    assert pool.asked == []
    assert dns.asked == ["rebinding.example"] * 3


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "100.64.1.1", "64:ff9b::a00:5", "::1"])
def test_a_webhook_name_that_resolves_to_a_private_address_is_never_called(
    dns: FakeDns, address: str
) -> None:
    pool = NoConnect()
    dns.answers["hook.example"] = address
    outcome = blocking.send_sync(pool, WebhookRequest("http://hook.example/h", {}, b"{}", 1.0))
    assert outcome.final and outcome.status_code is None
    assert (
        outcome.error
        == "refused: the webhook resolves to a private, loopback, link-local or reserved address"
    )
    assert address not in (outcome.error or "")
    assert pool.asked == []


def test_a_hostile_url_stored_before_the_fix_is_refused_at_call_time(dns: FakeDns) -> None:
    """Stored URLs are checked again at each call with the same strict parse."""
    pool = NoConnect()
    for url in ("http://169.254.169%2e254/latest/meta-data/", "http://169.254.169.254\\.example.com/"):
        outcome = blocking.predict_sync(pool, BackendRequest(url, {}, b"{}", 1.0, "gpu-1"))
        assert outcome.kind is Kind.FAILED and "not in a form taskgate calls" in (outcome.error or "")
        sent = blocking.send_sync(pool, WebhookRequest(url, {}, b"{}", 1.0))
        assert sent.final and sent.status_code is None
    assert pool.asked == [] and dns.asked == []


def test_https_is_pinned_with_the_original_name_for_tls(dns: FakeDns) -> None:
    """The pool for an HTTPS call is the checked address, with the name as SNI and the name the
    certificate must match. Port 9 on loopback refuses: the handshake never starts."""
    pool = urllib3.PoolManager()
    dns.answers["gpu.example"] = "127.0.0.1"
    outcome = blocking.predict_sync(pool, BackendRequest("https://gpu.example:9/p", {}, b"{}", 2.0, "gpu-1"))
    assert outcome.kind is Kind.RETRY
    assert outcome.error == "Server gpu-1 unreachable (connection refused)"
    (key,) = pool.pools.keys()
    assert (key.key_host, key.key_port, key.key_scheme) == ("127.0.0.1", 9, "https")
    assert (key.key_server_hostname, key.key_assert_hostname) == ("gpu.example", "gpu.example")


def test_an_unresolvable_name_is_a_retryable_failure_without_a_connection(dns: FakeDns) -> None:
    pool = NoConnect()
    outcome = blocking.predict_sync(pool, BackendRequest("http://nowhere.example/p", {}, b"{}", 1.0, "gpu-1"))
    assert (
        outcome.kind is Kind.RETRY
        and outcome.error == "Server gpu-1: the endpoint host could not be resolved"
    )
    sent = blocking.send_sync(pool, WebhookRequest("http://nowhere.example/h", {}, b"{}", 1.0))
    assert not sent.final and sent.retryable
    assert pool.asked == []


def test_user_facing_errors_name_the_server_never_the_url(dns: FakeDns) -> None:
    """Finding 5: the error a user reads names the server id and the kind of failure."""
    url = "http://10.0.0.1:9/predict?key=s3cret"

    class Refusing(urllib3.PoolManager):
        def connection_from_host(self, *args: Any, **kwargs: Any) -> Any:
            raise urllib3.exceptions.NewConnectionError(None, f"Failed to connect to {url}: refused")  # type: ignore[arg-type]

    outcome = blocking.predict_sync(Refusing(), BackendRequest(url, {}, b"{}", 1.0, "gpu-1"))
    assert outcome.error == "Server gpu-1 unreachable (connection refused)"
    assert "10.0.0.1" not in (outcome.error or "") and "s3cret" not in (outcome.error or "")

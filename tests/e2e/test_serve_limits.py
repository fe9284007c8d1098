"""`taskgate serve` bounds what one client can make it hold (security review, finding 5): a
request head over 32 KiB is a 431 with the connection closed, read no further, while /health
keeps answering; and uvicorn's concurrency limit is on. Real process, loopback only."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from handlers.local.http_limits import MAX_HEAD_BYTES

from .harness import SECRET, Api, _free_port, _wait_healthy, serve


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from serve(tmp_path_factory.mktemp("limits"))


def _address(api: Api) -> tuple[str, int]:
    url = httpx.URL(str(api.client.base_url))
    return url.host, int(url.port or 80)


def _raw(api: Api, head: bytes, body: bytes = b"") -> bytes:
    """Send a request as bytes; return what came back before the server closed."""
    with socket.create_connection(_address(api), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + body)  # the server may stop reading, as it should
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def test_a_huge_authorization_header_is_431_without_being_read_whole(api: Api) -> None:
    started = time.monotonic()
    head = b"GET /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * (32 * 1024 * 1024)
    answer = _raw(api, head + b"\r\n\r\n")
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"error":"Request header fields too large"' in answer
    # The server is unharmed: /health answers at once.
    assert api.client.get("/health").status_code == 200
    assert took < 2.0, took


def test_a_head_just_under_the_cap_is_served_and_a_large_body_is_not_a_head(api: Api) -> None:
    padding = b"X-Pad: " + b"p" * (MAX_HEAD_BYTES - 200) + b"\r\n"
    answer = _raw(api, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + padding + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    # A body well over the head cap, sent with its head in one write, is read as a body (401:
    # no token), not refused as a head.
    body = b"{" + b" " * (200 * 1024) + b"}"
    head = b"POST /api/task HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
    answer = _raw(api, head + b"Content-Length: %d\r\n\r\n" % len(body), body)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


def test_serve_caps_its_concurrency(tmp_path: Path) -> None:
    """Past --max-concurrency open connections, a request is a 503 at once, not a queue."""
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "JWT_SECRET": SECRET}
    command = [sys.executable, "-m", "tools.cli", "serve", "--db", str(tmp_path / "t.db")]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--max-concurrency", "3"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    held: list[socket.socket] = []
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}", log)
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        with httpx.Client(timeout=10) as client:
            assert client.get(f"http://127.0.0.1:{port}/health").status_code == 503
            for sock in held:
                sock.close()
            held = []
            # The held connections gone, the server serves again (uvicorn notices the closes).
            deadline = time.monotonic() + 10
            while client.get(f"http://127.0.0.1:{port}/health").status_code != 200:
                assert time.monotonic() < deadline, "still refusing after the connections closed"
                time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        proc.wait(timeout=10)

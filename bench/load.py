"""The load drivers: a sequential keep-alive client and a pool of concurrent clients.

The sequential client is the standard library's `http.client` on one kept-alive connection:
it adds about 0.1 ms per request, so the figure is the server's, not the client's. The
concurrent clients share one aiohttp session (one connection each); the floor relay is driven
by the same code, so their client overhead cancels out in the ratio.
"""

from __future__ import annotations

import asyncio
import http.client
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import msgspec

TASK = {"type": "bench", "priority": 5, "payload": {"n": 1}}


class Sequential:
    """One kept-alive HTTP/1.1 connection; each call times one request and its full reply."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base)
        self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        self._headers = {"Content-Type": "application/json", **headers}

    def post(self, path: str, body: object) -> tuple[float, int, bytes]:
        data = msgspec.json.encode(body)
        started = time.perf_counter()
        self._conn.request("POST", path, body=data, headers=self._headers)
        reply = self._conn.getresponse()
        content = reply.read()
        return (time.perf_counter() - started) * 1000, reply.status, content

    def close(self) -> None:
        self._conn.close()


def sequential_posts(
    base: str, headers: dict[str, str], body: object, count: int, warmup: int
) -> list[float]:
    """`count` POST /api/task one after another (after `warmup` untimed ones), in ms."""
    client = Sequential(base, headers)
    sync = isinstance(body, dict) and body.get("async") is False
    try:
        samples = []
        for i in range(warmup + count):
            elapsed, status, content = client.post("/api/task", body)
            if status != 200:
                raise RuntimeError(f"POST /api/task answered {status}: {content[:200]!r}")
            if sync and msgspec.json.decode(content).get("status") != "COMPLETED":
                raise RuntimeError(f"task did not complete: {content[:200]!r}")
            if i >= warmup:
                samples.append(elapsed)
        return samples
    finally:
        client.close()


@dataclass
class Throughput:
    completed: int
    seconds: float
    latencies_ms: list[float]

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


async def _concurrent(
    url: str, headers: dict[str, str], body: object, clients: int, total: int, seconds: float, check: bool
) -> Throughput:
    latencies: list[float] = []
    issued = 0
    data = msgspec.json.encode(body)
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"Content-Type": "application/json", **headers}
    ) as session:

        async def one() -> None:
            start = time.perf_counter()
            async with session.post(url, data=data) as reply:
                content = await reply.read()
            if reply.status != 200:
                raise RuntimeError(f"{url} answered {reply.status}: {content[:200]!r}")
            if check and msgspec.json.decode(content).get("status") != "COMPLETED":
                raise RuntimeError(f"task did not complete: {content[:200]!r}")
            latencies.append((time.perf_counter() - start) * 1000)

        # Warm every connection first (untimed), so connects are not in the figure.
        await asyncio.gather(*(one() for _ in range(clients)))
        latencies.clear()
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal issued
            while issued < total and time.monotonic() < deadline:
                issued += 1
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return Throughput(len(latencies), elapsed, latencies)


def concurrent_posts(
    url: str,
    headers: dict[str, str],
    body: object,
    *,
    clients: int,
    total: int,
    seconds: float,
    check_completed: bool = True,
) -> Throughput:
    """`clients` concurrent clients POSTing `body` to `url` until `total` or `seconds`."""
    return asyncio.run(_concurrent(url, headers, body, clients, total, seconds, check_completed))

"""Dispatch figures on `taskgate serve` with instant backends on loopback.

1. create -> predict received: 200 sequential creates; the backend stamps each arrival.
2. end-to-end throughput: 4 backends, 32 concurrent clients, each creating tasks with
   `async: false` (the reply is the finished task), for a bounded count and time.

    python -m bench.dispatch [--tasks 200] [--throughput-tasks 2000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from bench.processes import SECRET, gateway, instant_backends
from bench.stats import summary
from core.domain import auth

TASK = {"type": "bench", "priority": 5, "payload": {"n": 1}}


def register(base: str, backends: list[str], admin: dict[str, str]) -> None:
    for i, url in enumerate(backends):
        body = {
            "id": f"bench-{i}",
            "name": f"bench-{i}",
            "endpoints": {"predict": f"{url}/predict", "health": f"{url}/health"},
            "maxConcurrent": 64,
        }
        httpx.post(f"{base}/api/servers", json=body, headers=admin).raise_for_status()


def create_to_predict(base: str, backends: list[str], user: dict[str, str], count: int) -> list[float]:
    sent: dict[str, int] = {}
    with httpx.Client(base_url=base, headers=user) as client:
        for _ in range(10):  # warm up connections and caches
            client.post("/api/task", json={**TASK, "async": False})
        for _ in range(count):
            before = time.time_ns()
            reply = client.post("/api/task", json={**TASK, "async": False})
            reply.raise_for_status()
            sent[reply.json()["id"]] = before
    arrivals: dict[str, int] = {}
    for url in backends:
        arrivals |= httpx.get(f"{url}/_arrivals").json()
    return [(arrivals[task_id] - at) / 1e6 for task_id, at in sent.items()]


async def throughput(
    base: str, user: dict[str, str], clients: int, total: int, seconds: float
) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    done = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=user, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal done
            while done < total and time.monotonic() < deadline:
                done += 1
                start = time.perf_counter()
                reply = await client.post("/api/task", json={**TASK, "async": False})
                if reply.status_code != 200 or reply.json()["status"] != "COMPLETED":
                    raise RuntimeError(f"task did not complete: {reply.status_code} {reply.text[:200]}")
                latencies.append((time.perf_counter() - start) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return len(latencies), elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--throughput-tasks", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    admin = {"Authorization": f"Bearer {auth.mint(SECRET, sub='bench', roles=['admin'], ttl_s=3600)}"}
    user = {"Authorization": f"Bearer {auth.mint(SECRET, sub='bench-user', roles=['user'], ttl_s=3600)}"}

    with gateway() as base, instant_backends(4) as backends:
        register(base, backends[:1], admin)
        waits = create_to_predict(base, backends[:1], user, args.tasks)
        print("taskgate serve, SQLite, instant sync backends on loopback")
        print(summary("create -> predict received (1 backend, sequential)", waits))

    with gateway() as base, instant_backends(4) as backends:
        register(base, backends, admin)
        count, elapsed, latencies = asyncio.run(
            throughput(base, user, args.clients, args.throughput_tasks, args.seconds)
        )
        print(
            f"end-to-end throughput (4 backends, {args.clients} clients, async: false):"
            f" {count} tasks in {elapsed:.2f} s = {count / elapsed:.0f} tasks/s"
        )
        print(summary("  per-task latency seen by a client", latencies))


if __name__ == "__main__":
    main()

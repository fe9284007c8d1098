"""The dispatch decision (candidates + order) with 10 and with 1,000 registered servers.

    python -m bench.balancer [--calls 2000]

Pure CPU work on in-memory servers: what the dispatcher does per task before its claim.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time

from core import balancer
from core.models import Endpoints, Server, ServerStatus, Task


def fleet(size: int, rng: random.Random) -> list[Server]:
    servers = [
        Server(
            id=f"gpu-{i:05d}",
            name=f"gpu-{i}",
            endpoints=Endpoints(predict="http://127.0.0.1:9/p", health="http://127.0.0.1:9/h"),
            registered_at=0,
            max_concurrent=rng.randint(1, 16),
            capabilities=rng.sample(["video", "image", "text", "audio"], k=rng.randint(1, 4)),
            priority=rng.randint(1, 100),
            status=ServerStatus.ONLINE,
            latency_ewma_ms=rng.choice([None, rng.randint(5, 900)]),
        )
        for i in range(size)
    ]
    return [s if rng.random() > 0.3 else _busy(s) for s in servers]


def _busy(server: Server) -> Server:
    import msgspec

    return msgspec.structs.replace(server, active_tasks=server.max_concurrent // 2)


def per_call_us(servers: list[Server], algorithm: str, calls: int) -> list[float]:
    task = Task(
        id="t",
        owner="o",
        type="bench",
        priority=1,
        payload={},
        capabilities=["video"],
        created_at=0,
        updated_at=0,
        queued_at=0,
    )
    counter = itertools.count(1)
    rng = random.Random(7)
    balancer.order(algorithm, balancer.candidates(servers, task), sequence=lambda: next(counter), rng=rng)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        balancer.order(algorithm, balancer.candidates(servers, task), sequence=lambda: next(counter), rng=rng)
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(1)
    small, large = fleet(10, rng), fleet(1000, rng)
    print(f"dispatch decision (candidates + order), median of {args.calls} calls")
    for algorithm in balancer.ALGORITHMS:
        a = statistics.median(per_call_us(small, algorithm, args.calls))
        b = statistics.median(per_call_us(large, algorithm, args.calls))
        print(f"  {algorithm:22s} 10 servers {a:8.1f} us   1,000 servers {b:8.1f} us   ratio {b / a:6.1f}x")


if __name__ == "__main__":
    main()

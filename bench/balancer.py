"""The dispatch decision with 10 and with 1,000 registered servers.

    python -m bench.balancer [--calls 2000]

Pure CPU work on in-memory servers, what the dispatcher does per task besides its claim: the
fleet view's first server to try (`FleetView.order`, as `dispatch.assign` asks for it) and the
view's bookkeeping of the slot taken and freed (`adjust` +1, then -1). The view is loaded once
(a refresh happens at most once per FLEET_CACHE, 1 s, whatever the task rate); the task needs
one capability, a random quarter to all of the servers have it, 30 % of them are half busy.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time
from collections.abc import Callable

from core.domain import balancer
from core.domain.models import Endpoints, Server, ServerStatus, Task
from core.services.fleet import FleetView


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


class _Fleet:
    """What FleetView reads from a store, in memory."""

    def __init__(self, servers: list[Server]) -> None:
        self._servers = sorted(servers, key=lambda s: s.id)

    def list_servers(self) -> list[Server]:
        return list(self._servers)

    def get_setting(self, name: str) -> None:
        return None


def per_call_us(servers: list[Server], algorithm: str, calls: int) -> list[float]:
    """Microseconds per decision (with the view's bookkeeping of the claim and release)."""
    decide = _decider(servers, algorithm)
    return [decide() for _ in range(calls)]


def _decider(servers: list[Server], algorithm: str) -> Callable[[], float]:
    """One timed decision on a view of `servers` (warmed), per call."""
    view = FleetView(_Fleet(servers), ttl_ms=10**12, clock=lambda: 0)  # type: ignore[arg-type]
    task = _task()
    counter = itertools.count(1)
    rng = random.Random(7)

    def decide() -> float:
        started = time.perf_counter()
        server = next(view.order(task, algorithm, sequence=lambda: next(counter), rng=rng))
        view.adjust(server.id, +1)
        view.adjust(server.id, -1)
        return (time.perf_counter() - started) * 1e6

    for _ in range(50):  # warm the view and its index
        decide()
    return decide


def _task() -> Task:
    return Task(
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


def full_order_us(servers: list[Server], algorithm: str, calls: int) -> list[float]:
    """The previous decision, for comparison: every candidate, then the whole order."""
    task = _task()
    counter = itertools.count(1)
    rng = random.Random(7)
    balancer.order(algorithm, balancer.candidates(servers, task), sequence=lambda: next(counter), rng=rng)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        balancer.order(algorithm, balancer.candidates(servers, task), sequence=lambda: next(counter), rng=rng)
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


ROUNDS = 20


def ratios(calls: int) -> list[tuple[str, float, float, float]]:
    """(algorithm, median us with 10 servers, with 1,000, ratio) for every algorithm."""
    rng = random.Random(1)
    small, large = fleet(10, rng), fleet(1000, rng)
    found = []
    for algorithm in balancer.ALGORITHMS:
        # Interleaved in rounds, so a change in the machine's load falls on both sizes alike.
        small_decide, large_decide = _decider(small, algorithm), _decider(large, algorithm)
        a: list[float] = []
        b: list[float] = []
        for _ in range(ROUNDS):
            a += [small_decide() for _ in range(calls // ROUNDS)]
            b += [large_decide() for _ in range(calls // ROUNDS)]
        found.append(
            (
                algorithm,
                statistics.median(a),
                statistics.median(b),
                statistics.median(b) / statistics.median(a),
            )
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(1)
    small, large = fleet(10, rng), fleet(1000, rng)
    for label, measure in (
        ("dispatch decision (FleetView.order, first server) + adjust", per_call_us),
        ("full order (balancer.candidates + balancer.order), as before", full_order_us),
    ):
        print(f"{label}, median of {args.calls} calls")
        for algorithm in balancer.ALGORITHMS:
            a = statistics.median(measure(small, algorithm, args.calls))
            b = statistics.median(measure(large, algorithm, args.calls))
            print(
                f"  {algorithm:22s} 10 servers {a:8.1f} us   1,000 servers {b:8.1f} us   ratio {b / a:6.1f}x"
            )


if __name__ == "__main__":
    main()

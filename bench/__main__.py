"""Every performance figure of issue 7 in one command, each against its target.

    python -m bench            # the full run, a few minutes
    python -m bench --quick    # smaller counts, under a minute on a quiet machine
    python -m bench --aws      # also the same HTTP figures on `taskgate dev --aws` (no targets)
    python -m bench --only-scheduler [--quick]   # the scheduler section alone (issue 14)

Everything runs on loopback: `taskgate serve` on a fresh SQLite file (rate limits off),
instant synchronous backends (bench/instant_backend.py) and the floor relay (bench/relay.py)
as separate processes. Each figure prints its method; latencies are medians, p95 and p99 of
the runs given. `uptime` load averages are printed with each section: on a shared machine the
absolute figures move with them, the ratios much less. The results are also written to
bench/results/<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench import balancer, seed, sweep_work
from bench import scheduler as scheduling
from bench.load import TASK, Throughput, concurrent_posts, sequential_posts
from bench.processes import SECRET, Service, cpu_s, instant_backends, relay, rss_mb, serve, serve_aws
from bench.stats import percentile
from core.domain import auth

ADMIN = {"Authorization": f"Bearer {auth.mint(SECRET, sub='bench', roles=['admin'], ttl_s=86_400)}"}
USER = {"Authorization": f"Bearer {auth.mint(SECRET, sub='bench-user', roles=['user'], ttl_s=86_400)}"}
SYNC_TASK = {**TASK, "async": False}


@dataclass(frozen=True)
class Sizes:
    posts: int
    syncs: int
    throughput_tasks: int
    throughput_s: float
    clients: int
    decision_calls: int
    sweep_large: int
    rss_seed: int
    rss_tasks: int
    rss_s: float
    backlog: int = 100_000
    aws_backlog: int = 4_400
    fill_rounds: int = 300


FULL = Sizes(2000, 1000, 6000, 15, 32, 2000, 100_000, 100_000, 20_000, 60)
QUICK = Sizes(500, 300, 1500, 5, 32, 500, 10_000, 10_000, 3_000, 10, 10_000, 4_400, 100)
# moto answers one request at a time and `dev --aws` is seconds per request on a busy
# machine: small counts and fewer clients, so the section stays bounded.
AWS = Sizes(30, 10, 100, 15, 4, 0, 0, 0, 0, 0)


@dataclass
class Figure:
    name: str
    target: str
    measured: str
    passed: bool | None  # None: no target (AWS)
    method: str


def ms(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.2f} ms, p95 {percentile(values, 95):.2f} ms,"
        f" p99 {percentile(values, 99):.2f} ms (n={len(values)})"
    )


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def register(base: str, backends: list[str]) -> None:
    for i, url in enumerate(backends):
        body = {
            "id": f"bench-{i}",
            "name": f"bench-{i}",
            "endpoints": {"predict": f"{url}/predict", "health": f"{url}/health"},
            "maxConcurrent": 64,
        }
        httpx.post(f"{base}/api/servers", json=body, headers=ADMIN, timeout=30).raise_for_status()


def wait_idle(base: str, timeout_s: float = 120) -> None:
    """Until no task is PENDING (the backlog a previous figure left is not in the next)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = httpx.get(f"{base}/api/stats/tasks", headers=ADMIN, timeout=30)
        reply.raise_for_status()
        if reply.json()["pendingTasks"] == 0:
            time.sleep(0.5)  # and the last ones dispatched have answered
            return
        time.sleep(0.2)
    raise RuntimeError(f"tasks still PENDING after {timeout_s} s")


def http_figures(service: Service, backends: list[str], sizes: Sizes, aws: bool) -> list[Figure]:
    """POST latency, create -> COMPLETED and throughput (the floor is measured by the caller)."""
    base, where = service.base, ("taskgate dev --aws" if aws else "taskgate serve")
    register(base, backends)
    figures = []
    print(f"  [{where}] POST /api/task, sequential, {load()}", flush=True)
    posts = sequential_posts(base, USER, TASK, sizes.posts, warmup=max(10, sizes.posts // 20))
    figures.append(
        Figure(
            f"POST /api/task latency ({where})",
            "median <= 3 ms, p99 <= 10 ms",
            ms(posts),
            None if aws else statistics.median(posts) <= 3 and percentile(posts, 99) <= 10,
            f"{sizes.posts} POSTs of {TASK} (async) one after another on one kept-alive connection"
            f" (http.client), after {max(10, sizes.posts // 20)} untimed; {len(backends)} instant"
            " backends registered, so the tasks are dispatched meanwhile as in use",
        )
    )
    wait_idle(base)  # the tasks above are dispatched before the next figure starts
    print(f"  [{where}] create -> COMPLETED, sequential, {load()}", flush=True)
    syncs = sequential_posts(base, USER, SYNC_TASK, sizes.syncs, warmup=max(5, sizes.syncs // 20))
    figures.append(
        Figure(
            f"create -> COMPLETED, instant sync backend ({where})",
            "median <= 5 ms",
            ms(syncs),
            None if aws else statistics.median(syncs) <= 5,
            f"{sizes.syncs} POSTs with async: false one after another (the reply is the finished"
            " task, checked COMPLETED), client-observed, same connection",
        )
    )
    return figures


def throughput(url: str, sizes: Sizes) -> Throughput:
    return concurrent_posts(
        url,
        USER,
        SYNC_TASK,
        clients=sizes.clients,
        total=sizes.throughput_tasks,
        seconds=sizes.throughput_s,
        check_completed="/api/task" in url,  # the relay passes the backend's own reply on
    )


def describe(run: Throughput) -> str:
    return f"{run.per_second:.0f} tasks/s ({run.completed} in {run.seconds:.1f} s; latency {ms(run.latencies_ms)})"


def serve_figures(sizes: Sizes) -> list[Figure]:
    figures: list[Figure] = []
    with instant_backends(4) as backends:
        with serve() as service:
            figures += http_figures(service, backends[:1], sizes, aws=False)
        with serve() as service, relay(backends) as floor_base:
            register(service.base, backends)
            print(f"  throughput: floor relay, then taskgate, then the floor again, {load()}", flush=True)
            floor_a = throughput(f"{floor_base}/predict", sizes)
            cpu_before = cpu_s(service.pid)
            gate = throughput(f"{service.base}/api/task", sizes)
            cpu_used = cpu_s(service.pid) - cpu_before
            floor_b = throughput(f"{floor_base}/predict", sizes)
    floor = (floor_a.per_second + floor_b.per_second) / 2
    ratio = floor / gate.per_second if gate.per_second else float("inf")
    method = (
        f"{sizes.clients} concurrent clients (one aiohttp session, a connection each), each POSTing"
        f" async: false tasks until {sizes.throughput_tasks} tasks or {sizes.throughput_s:.0f} s,"
        " every reply checked COMPLETED; 4 instant backends, maxConcurrent 64 each"
    )
    figures.append(
        Figure(
            "end-to-end throughput (taskgate serve)",
            ">= 400 tasks/s",
            describe(gate) + f"; gateway CPU {1000 * cpu_used / max(1, gate.completed):.2f} ms per task",
            gate.per_second >= 400,
            method,
        )
    )
    figures.append(
        Figure(
            "throughput against the floor",
            "floor / taskgate <= 2.5x",
            f"{ratio:.2f}x (floor {floor:.0f} tasks/s: {floor_a.per_second:.0f} before,"
            f" {floor_b.per_second:.0f} after taskgate)",
            ratio <= 2.5,
            "the same clients and backends through bench/relay.py: the same two HTTP hops"
            " (client -> relay -> backend /predict and back) on the same stack (uvicorn +"
            " uvloop + httptools in, aiohttp out), no taskgate logic; run just before and"
            " just after taskgate, averaged",
        )
    )
    return figures


def decision_figure(sizes: Sizes) -> Figure:
    ratios = balancer.ratios(sizes.decision_calls)
    worst = max(ratios, key=lambda r: r[3])
    detail = "; ".join(
        f"{name} {small:.1f}/{large:.1f} us = {ratio:.2f}x" for name, small, large, ratio in ratios
    )
    return Figure(
        "dispatch decision, 1,000 servers vs 10",
        "<= 2x slower",
        f"worst {worst[3]:.2f}x ({worst[0]}); {detail}",
        worst[3] <= 2,
        f"median of {sizes.decision_calls} decisions per algorithm, in process: the fleet view's"
        " candidates for a task needing one capability and the first server to try (bench/balancer.py)",
    )


def sweep_figure(sizes: Sizes) -> Figure:
    print(f"  sweeper work with 100 and {sizes.sweep_large:,} finished tasks, {load()}", flush=True)
    small, large = sweep_work.measure(100), sweep_work.measure(sizes.sweep_large)
    scans = sorted(set(small.full_scans) | set(large.full_scans))
    return Figure(
        f"sweeper work, {sizes.sweep_large:,} finished tasks vs 100",
        "the same rows read (index-driven)",
        f"{large.vm_steps} vs {small.vm_steps} SQLite VM steps, {len(large.statements)} vs"
        f" {len(small.statements)} statements, full scans of tasks: {len(scans)}",
        large.vm_steps <= small.vm_steps * 1.05 and not scans,
        "one sweep (after an untimed one) on a database seeded with that many COMPLETED tasks,"
        f" {sweep_work.SERVERS} servers and {sweep_work.PENDING_TASKS} PENDING tasks; SQLite's"
        " progress handler counts every VM instruction, each statement's EXPLAIN QUERY PLAN is"
        " checked for a scan of the tasks table (bench/sweep_work.py)",
    )


def memory_figure(sizes: Sizes) -> Figure:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "seeded.db"
        print(f"  memory: seeding {sizes.rss_seed:,} finished tasks, {load()}", flush=True)
        seed.database(db, sizes.rss_seed)
        with instant_backends(4) as backends, serve(db=db) as service:
            register(service.base, backends)
            started = rss_mb(service.pid)
            print(f"  memory: up to {sizes.rss_tasks:,} tasks through taskgate, {load()}", flush=True)
            warm = concurrent_posts(
                f"{service.base}/api/task", USER, SYNC_TASK, clients=32, total=1000, seconds=sizes.rss_s
            )
            after_warm = rss_mb(service.pid)
            run = concurrent_posts(
                f"{service.base}/api/task",
                USER,
                SYNC_TASK,
                clients=32,
                total=sizes.rss_tasks - warm.completed,
                seconds=sizes.rss_s,
            )
            httpx.get(f"{service.base}/api/stats/tasks", headers=ADMIN, timeout=30).raise_for_status()
            final = rss_mb(service.pid)
    through = warm.completed + run.completed
    per_1000 = max(0.0, (final - after_warm) / max(1, run.completed) * 1000)
    projected = final + per_1000 * max(0, 100_000 - through) / 1000
    return Figure(
        "resident memory of taskgate serve after 100,000 tasks",
        "<= 250 MB",
        f"{final:.1f} MiB with {sizes.rss_seed:,} tasks stored and {through:,} run through it"
        f" (at start {started:.1f} MiB, after the first {warm.completed:,} {after_warm:.1f} MiB;"
        f" growth {per_1000:.2f} MiB per 1,000 tasks after that, so {projected:.1f} MiB"
        " projected at 100,000 run through)",
        final <= 250 and projected <= 250,
        "VmRSS from /proc/<pid>/status of `taskgate serve` on a database seeded with finished"
        " tasks, after tasks are run through it by 32 clients (async: false) and a stats read",
    )


def scheduler_figures(sizes: Sizes) -> list[Figure]:
    """The scheduler with a backlog: half the tasks no server can run, half behind a full fleet
    (bench/scheduler.py)."""
    n, tenth = sizes.backlog, sizes.backlog // 10
    print(f"  scheduler: fill a freed slot, {n:,} PENDING vs an empty queue, {load()}", flush=True)
    full, empty = scheduling.fill_times(n, sizes.fill_rounds)
    small, _ = scheduling.fill_times(tenth, sizes.fill_rounds)
    big_ms, empty_ms, small_ms = (statistics.median(x) for x in (full, empty, small))
    shape = (
        f"{scheduling.SERVERS} servers x {scheduling.SLOTS} slots all busy, {scheduling.OWNERS} owners,"
        " priorities 0-10, half the backlog needing a capability nobody has"
    )
    figures = [
        Figure(
            f"fill a freed slot, {n:,} PENDING vs an empty queue (SQLite)",
            "<= 1.2x",
            f"{big_ms:.3f} ms vs {empty_ms:.3f} ms = {big_ms / empty_ms:.2f}x",
            big_ms <= 1.2 * empty_ms,
            f"median of {sizes.fill_rounds} rounds, alternated: release one running task, then one"
            f" dispatch round (work.drain) that starts exactly one task; {shape}; the empty queue"
            " holds only the task that takes the slot",
        ),
        Figure(
            f"fill a freed slot, {n:,} PENDING vs {tenth:,} (SQLite)",
            "<= 1.2x (cost independent of the backlog)",
            f"{big_ms:.3f} ms vs {small_ms:.3f} ms = {big_ms / small_ms:.2f}x",
            big_ms <= 1.2 * small_ms,
            "as above, the same owners and priorities, a backlog ten times smaller",
        ),
    ]
    print(f"  scheduler: DynamoDB reads per dispatch (moto), {load()}", flush=True)
    reads = scheduling.dynamodb_reads((0, sizes.aws_backlog // 10, sizes.aws_backlog), 5)
    small_reads, large_reads = reads[sizes.aws_backlog // 10], reads[sizes.aws_backlog]
    figures.append(
        Figure(
            f"DynamoDB reads per dispatch, {sizes.aws_backlog:,} PENDING vs {sizes.aws_backlog // 10:,}",
            "no growth with the backlog (within 10%)",
            "; ".join(
                f"{size:,} PENDING: {r.requests} requests, {r.items} items" for size, r in reads.items()
            ),
            large_reads.requests <= 1.1 * small_reads.requests
            and large_reads.items <= 1.1 * small_reads.items,
            "every Query/GetItem/BatchGetItem of one release + dispatch round counted by a botocore"
            f" after-call hook (items: ScannedCount), mean of 5 rounds, DynamoStore on moto; {shape};"
            " the backlog seeded as the store holds it (task items and owner-queue counts) in batches",
        )
    )
    print(f"  scheduler: sweeper work with {n:,} PENDING, none due, {load()}", flush=True)
    steps_big, steps_small = scheduling.sweep_steps(n), scheduling.sweep_steps(tenth)
    figures.append(
        Figure(
            f"sweeper work, {n:,} PENDING (none due) vs {tenth:,}",
            "the same rows read (only what is due)",
            f"{steps_big} vs {steps_small} SQLite VM steps",
            steps_big <= steps_small * 1.05,
            "one sweep after an untimed one; SQLite's progress handler counts every VM instruction",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "pending.db"
        print(f"  scheduler: memory of serve holding {n:,} PENDING, {load()}", flush=True)
        scheduling.seed_pending(db, n)
        with serve(db=db) as service:
            time.sleep(2)  # the first dispatch round and sweep have run
            httpx.get(f"{service.base}/api/stats/tasks", headers=ADMIN, timeout=30).raise_for_status()
            resident = rss_mb(service.pid)
    figures.append(
        Figure(
            f"resident memory of taskgate serve holding {n:,} PENDING tasks",
            "<= 250 MB",
            f"{resident:.1f} MiB",
            resident <= 250,
            "VmRSS of `taskgate serve` on a database seeded with that backlog, after its first"
            " dispatch round, sweeps and a stats read (no server registered)",
        )
    )
    return figures


def aws_figures(sizes: Sizes) -> list[Figure]:
    figures: list[Figure] = []
    with instant_backends(4) as backends:
        with serve_aws() as service:
            figures += http_figures(service, backends[:1], sizes, aws=True)
        with serve_aws() as service:
            register(service.base, backends)
            print(f"  [taskgate dev --aws] throughput, {load()}", flush=True)
            run = throughput(f"{service.base}/api/task", sizes)
            figures.append(
                Figure(
                    "end-to-end throughput (taskgate dev --aws)",
                    "(none)",
                    describe(run) + f"; RSS after {rss_mb(service.pid):.1f} MiB",
                    None,
                    f"as on serve but {sizes.clients} clients, {sizes.throughput_tasks} tasks or"
                    f" {sizes.throughput_s:.0f} s",
                )
            )
    return figures


def print_table(figures: list[Figure]) -> None:
    print()
    print("| figure | target | measured | pass |")
    print("|---|---|---|---|")
    for f in figures:
        verdict = "-" if f.passed is None else ("yes" if f.passed else "**NO**")
        print(f"| {f.name} | {f.target} | {f.measured} | {verdict} |")
    print()
    print("Methods:")
    for f in figures:
        print(f"- {f.name}: {f.method}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts (under a minute)")
    parser.add_argument("--aws", action="store_true", help="also measure taskgate dev --aws (no targets)")
    parser.add_argument("--only-scheduler", action="store_true", help="only the scheduler section")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    print(
        f"taskgate benchmark ({'quick' if args.quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},"
        f" {os.cpu_count()} CPUs, Python {platform.python_version()}, {load()}",
        flush=True,
    )
    steps: list[Callable[[], list[Figure]]] = [
        lambda: serve_figures(sizes),
        lambda: [decision_figure(sizes)],
        lambda: [sweep_figure(sizes)],
        lambda: [memory_figure(sizes)],
        lambda: scheduler_figures(sizes),
    ]
    if args.only_scheduler:
        steps = [lambda: scheduler_figures(sizes)]
    if args.aws:
        steps.append(lambda: aws_figures(AWS))
    figures: list[Figure] = []
    for step in steps:
        try:
            figures += step()
        except Exception as exc:  # one broken section must not lose the others' figures
            print(f"  section failed: {exc!r}", flush=True)
            figures.append(Figure("(a section failed)", "", repr(exc)[:300], False, "see the output above"))
    print(f"done, {load()}")
    print_table(figures)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    out = results / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
    out.write_text(json.dumps({"quick": args.quick, "figures": [asdict(f) for f in figures]}, indent=2))
    missed = [f.name for f in figures if f.passed is False]
    print(
        f"\n{len(figures) - len(missed)} of {len(figures)} figures pass"
        + (f"; missed: {missed}" if missed else "")
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

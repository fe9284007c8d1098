"""The scheduler at scale (docs/SCHEDULING.md): a backlog of PENDING tasks of which half no
server can run and half wait behind a full fleet, against an empty queue.

1. fill a freed slot (SQLite, in process): release one task of the full fleet, then one
   dispatch round (`work.drain`), which starts exactly one task; median time of the two, with
   the backlog and with an empty queue (only the task that takes the slot), alternated.
2. reads per dispatch (DynamoDB under moto, in process): the same release and round, every
   read request and every item they return counted by a botocore hook.
3. the sweeper's queue-timeout pass with the backlog (none due): SQLite VM steps of one sweep
   with the backlog against one with a handful of PENDING tasks.
4. memory of `taskgate serve` holding the backlog (a started process).

    python -m bench.scheduler [--backlog 100000] [--aws-backlog 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Config
from core.domain.ids import now_ms
from core.domain.models import Endpoints, Server, ServerStatus, Task, TaskStatus
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.ports.storage import Store
from core.services import sweeper, tasks, work
from core.services.context import Context
from core.services.dispatch import Assignment

SERVERS = 4
SLOTS = 16
OWNERS = 20
RUNNABLE, UNRUNNABLE = ["gpu"], ["tpu"]


@dataclass
class Backlog:
    ctx: Context
    running: list[Task]
    prefix: str = "run"
    serial: int = 0

    def submit(self, capabilities: list[str], owner: str, priority: int) -> Task:
        self.serial += 1
        now = self.ctx.now()
        task = Task(
            id=f"{self.prefix}-{self.serial:07d}",
            owner=owner,
            type="bench",
            priority=priority,
            payload={"n": self.serial},
            capabilities=capabilities,
            created_at=now,
            updated_at=now,
            queued_at=now,
        )
        self.ctx.store.put_task(task)
        return task

    def free_one_slot_and_fill_it(self) -> float:
        """Release one running task, then one dispatch round: seconds for both."""
        done = self.running.pop(0)
        started: list[Assignment] = []
        before = time.perf_counter()
        tasks.finish(self.ctx, done, TaskStatus.COMPLETED, result={})
        work.drain(self.ctx, 100, started.append)
        elapsed = time.perf_counter() - before
        assert len(started) == 1, f"one freed slot, {len(started)} started"
        self.running.append(started[0].task)
        return elapsed


def build(store: Store, backlog: int, *, clock: Callable[[], int] = now_ms) -> Backlog:
    """A full fleet (SERVERS x SLOTS running) and `backlog` PENDING tasks: half need a
    capability nobody has, half wait for the fleet; OWNERS owners, priorities 0-10."""
    ctx = Context(store=store, queue=CallbackQueue(), config=Config(jwt_secret="x" * 32), clock=clock)
    for i in range(SERVERS):
        store.put_server(
            Server(
                id=f"bench-{i}",
                name=f"bench-{i}",
                endpoints=Endpoints(predict="http://127.0.0.1:9/predict", health="http://127.0.0.1:9/health"),
                capabilities=RUNNABLE,
                max_concurrent=SLOTS,
                status=ServerStatus.ONLINE,
                registered_at=clock(),
            )
        )
    state = Backlog(ctx, [])
    for i in range(SERVERS * SLOTS):
        state.submit(RUNNABLE, f"owner-{i % OWNERS}", 5)
    started: list[Assignment] = []
    work.drain(ctx, 1000, started.append)
    state.running = [a.task for a in started]
    assert len(state.running) == SERVERS * SLOTS
    state.prefix = "backlog"
    for i in range(backlog):
        state.submit(UNRUNNABLE if i % 2 else RUNNABLE, f"owner-{i % OWNERS}", i % 11)
    return state


def _sqlite_seeded(path: Path, backlog: int) -> Backlog:
    store = SqliteStore(str(path))
    conn = store._conn()
    conn.execute("BEGIN")  # setup in one transaction, not what is measured
    try:
        state = _seed_in(store, backlog)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return state


def _seed_in(store: Store, backlog: int) -> Backlog:
    ctx = Context(store=store, queue=CallbackQueue(), config=Config(jwt_secret="x" * 32))
    state = Backlog(ctx, [], prefix="backlog")
    for i in range(backlog):
        state.submit(UNRUNNABLE if i % 2 else RUNNABLE, f"owner-{i % OWNERS}", i % 11)
    return state


def fill_times(backlog: int, rounds: int) -> tuple[list[float], list[float]]:
    """Milliseconds to release a slot and fill it: (with the backlog, with an empty queue)."""
    with tempfile.TemporaryDirectory() as tmp:
        full = build(SqliteStore(str(Path(tmp) / "full.db")), 0)
        seeded = _sqlite_seeded(Path(tmp) / "full.db", backlog)
        del seeded
        empty = build(SqliteStore(str(Path(tmp) / "empty.db")), 0)
        empty.prefix = "next"
        for state in (full, empty):
            state.ctx.store._conn().execute("ANALYZE")  # type: ignore[attr-defined]
        with_backlog: list[float] = []
        without: list[float] = []
        for i in range(rounds + 5):  # alternated, so load on the machine hits both alike
            empty.submit(RUNNABLE, "owner-0", 5)
            a = full.free_one_slot_and_fill_it()
            b = empty.free_one_slot_and_fill_it()
            if i >= 5:  # the first rounds warm caches
                with_backlog.append(a * 1000)
                without.append(b * 1000)
        return with_backlog, without


# -- DynamoDB reads ------------------------------------------------------------------------

READS = frozenset({"Query", "GetItem", "BatchGetItem", "Scan"})


@dataclass
class ReadCount:
    requests: int = 0
    items: int = 0


@contextlib.contextmanager
def counting(client: Any) -> Iterator[ReadCount]:
    count = ReadCount()

    def after(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in READS:
            count.requests += 1
            count.items += int(parsed.get("ScannedCount", parsed.get("Count", 1 if "Item" in parsed else 0)))

    client.meta.events.register("after-call.dynamodb", after)
    try:
        yield count
    finally:
        client.meta.events.unregister("after-call.dynamodb", after)


def dynamodb_reads(backlogs: tuple[int, ...], rounds: int) -> dict[int, ReadCount]:
    """Reads of one release + dispatch round (averaged over `rounds`) per backlog size."""
    import boto3
    from moto import mock_aws

    from tests.support.aws import load_template
    from tools.moto_env import FAKE_AWS_ENV, create_table

    results: dict[int, ReadCount] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(_env(FAKE_AWS_ENV))  # fake credentials: nothing leaves the process
        stack.enter_context(mock_aws())
        client = boto3.client("dynamodb", region_name="us-east-1")
        from core.aws.dynamodb import DynamoStore

        for n, backlog in enumerate(backlogs):
            name = create_table(client, f"bench-{n}", load_template())
            state = build(DynamoStore(name, client=client), 0)
            _seed_dynamo(client, name, backlog)
            total = ReadCount()
            state.prefix = "next"
            for _ in range(rounds):
                state.submit(RUNNABLE, "owner-0", 5)  # so an empty queue also fills the slot
                state.ctx.fleet.invalidate()  # as every Lambda drain does
                with counting(client) as count:
                    state.free_one_slot_and_fill_it()
                total.requests += count.requests
                total.items += count.items
            results[backlog] = ReadCount(total.requests // rounds, total.items // rounds)
    return results


def _seed_dynamo(client: Any, table: str, backlog: int) -> None:
    """The backlog as the store would hold it (task items with their index keys, and the owner
    queues' counts), written in batches: setup, not what is measured (moto copies its table on
    every transaction, so seeding through the store grows with the square of the backlog)."""
    from core.aws.dynamodb.items import task_to_item, to_value
    from core.aws.dynamodb.keys import owner_queue_key
    from core.domain.scheduling import queue_key

    now = now_ms()
    items: list[dict[str, Any]] = []
    counts: dict[tuple[str, int, str], int] = {}
    for i in range(backlog):
        capabilities = UNRUNNABLE if i % 2 else RUNNABLE
        task = Task(
            id=f"backlog-{i:07d}",
            owner=f"owner-{i % OWNERS}",
            type="bench",
            priority=i % 11,
            payload={"n": i},
            capabilities=capabilities,
            created_at=now,
            updated_at=now,
            queued_at=now,
        )
        items.append(task_to_item(task))
        key = (queue_key(capabilities), task.priority, task.owner)
        counts[key] = counts.get(key, 0) + 1
    for (queue, priority, owner), pending in counts.items():
        item = owner_queue_key(queue, priority, owner)
        item |= {"pending": to_value(pending), "queue": to_value(queue), "priority": to_value(priority)}
        item["owner"] = to_value(owner)
        items.append(item)
    for start in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        client.batch_write_item(RequestItems={table: batch})


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    import os

    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- the sweeper ---------------------------------------------------------------------------


def sweep_steps(backlog: int) -> int:
    """SQLite VM steps of one sweep over the fleet and `backlog` PENDING tasks, none due."""
    with tempfile.TemporaryDirectory() as tmp:
        started = now_ms()
        state = build(SqliteStore(str(Path(tmp) / "sweep.db")), 0)
        seeded = _sqlite_seeded(Path(tmp) / "sweep.db", backlog)
        del seeded
        # The sweeps see the same time after the claims whatever the seeding took: slot
        # reconciliation (which reads the tasks PROCESSING) runs in both or in neither.
        state.ctx.clock = lambda: started + 1_000
        conn = state.ctx.store._conn()  # type: ignore[attr-defined]
        conn.execute("ANALYZE")
        sweeper.sweep(state.ctx)
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        conn.set_progress_handler(step, 1)
        try:
            sweeper.sweep(state.ctx)
        finally:
            conn.set_progress_handler(None, 1)
        return steps


def seed_pending(path: Path, backlog: int) -> None:
    """A database file holding `backlog` PENDING tasks (half unrunnable), for the memory figure."""
    _sqlite_seeded(path, backlog).ctx.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--aws-backlog", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    backlog, empty = fill_times(args.backlog, args.rounds)
    print(
        f"fill a freed slot: {statistics.median(backlog):.3f} ms with {args.backlog:,} PENDING,"
        f" {statistics.median(empty):.3f} ms with an empty queue"
        f" ({statistics.median(backlog) / statistics.median(empty):.2f}x)"
    )
    reads = dynamodb_reads((0, args.aws_backlog), 5)
    for size, count in reads.items():
        print(f"DynamoDB, {size:,} PENDING: {count.requests} read requests, {count.items} items per dispatch")
    print(
        f"sweep VM steps: {sweep_steps(args.backlog)} with {args.backlog:,} PENDING, {sweep_steps(10)} with 10"
    )


if __name__ == "__main__":
    main()

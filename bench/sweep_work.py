"""How much the sweeper reads with many finished tasks stored: one sweep over a database of
100 finished tasks and one over 100,000, the same live work in both (servers, a few PENDING
tasks), counted inside SQLite.

- VM steps: the SQLite virtual-machine instructions the sweep executes (a progress handler
  called at every instruction). A scan of the table would grow with it; index seeks do not.
- statements: the SQL the sweep runs (a trace callback); each one's `EXPLAIN QUERY PLAN` is
  checked for a `SCAN tasks` without an index.

    python -m bench.sweep_work [--small 100] [--large 100000]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import seed
from core.config import Config
from core.domain.ids import new_task_id, now_ms
from core.domain.models import Task
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.services import sweeper
from core.services.context import Context

PENDING_TASKS = 20
SERVERS = 4


@dataclass
class SweepWork:
    finished_tasks: int
    vm_steps: int = 0
    statements: list[str] = field(default_factory=list)
    full_scans: list[str] = field(default_factory=list)


def measure(finished: int) -> SweepWork:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(str(Path(tmp) / "sweep.db"))
        try:
            now = now_ms()
            seed.servers(store, SERVERS, now=now)
            seed.finished_tasks(store, finished, now=now)
            for i in range(PENDING_TASKS):
                store.put_task(
                    Task(
                        id=new_task_id(),
                        owner="o",
                        type="t",
                        priority=i % 11,
                        payload={},
                        created_at=now,
                        updated_at=now,
                        queued_at=now,
                    )
                )
            ctx = Context(store=store, queue=CallbackQueue(), config=Config(jwt_secret="x" * 32))
            conn = store._conn()
            conn.execute("ANALYZE")  # what a long-lived database has; the plans below do not need it
            sweeper.sweep(ctx)  # once untimed: the same state for the counted sweep
            work = SweepWork(finished)

            def step() -> int:
                work.vm_steps += 1
                return 0

            conn.set_progress_handler(step, 1)
            conn.set_trace_callback(work.statements.append)
            try:
                sweeper.sweep(ctx)
            finally:
                conn.set_progress_handler(None, 1)
                conn.set_trace_callback(None)
            work.full_scans = [sql for sql in set(work.statements) if _scans_tasks(conn, sql)]
            return work
        finally:
            store.close()


def _scans_tasks(conn: sqlite3.Connection, sql: str) -> bool:
    if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
        return False
    try:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    except sqlite3.Error:
        return False
    return any(" tasks" in row[3] and row[3].startswith("SCAN") and "INDEX" not in row[3] for row in plan)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    for work in (measure(args.small), measure(args.large)):
        print(
            f"{work.finished_tasks:>7} finished tasks: {work.vm_steps} VM steps,"
            f" {len(work.statements)} statements, full scans of tasks: {work.full_scans or 'none'}"
        )


if __name__ == "__main__":
    main()

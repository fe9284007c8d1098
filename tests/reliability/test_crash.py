"""Crash: `kill -9` of `taskgate serve` with every task in flight (queued, or on a backend),
then a restart on the same SQLite file. GIVEN four backends (two answering inline, two
calling back) that record every predict call, WHEN the gateway is killed once a tenth of the
tasks are done and restarted a moment later, THEN every task ends COMPLETED, none is missing,
no (task, attempt) reached a backend twice, no backend held more than its maxConcurrent, and
every slot is free again. Callbacks sent while the gateway was down are lost: those attempts
time out and are retried, which is the at-least-once part of the promise."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.fleet import Mock, _stop, start_backends
from tests.e2e.harness import unique
from tests.support.waiting import eventually

from .conftest import Scale
from .proof import Gateway, new_owner, prove, register, status_counts, submit_all, wait_terminal

# Long runs push five times the tasks through the same two cores: each task is slower (so
# the gateway is not merely overloaded) and may take longer.
TIMING = {False: (600, 4000), True: (2000, 15000)}  # long? -> (backend delay, task timeout) ms
API_KEY = "crash-test-api-key-" + "k" * 16


def test_kill_9_with_tasks_in_flight_loses_none_and_sends_no_attempt_twice(
    tmp_path: Path, scale: Scale
) -> None:
    slots = 10 if not scale.long else 25
    delay_ms, timeout_ms = TIMING[scale.long]
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    # A restart must not make servers look silent (that is another test's subject).
    gateway = Gateway(tmp_path, HEARTBEAT_TIMEOUT=60_000, RECONCILE_GRACE=2000)
    mocks = [
        Mock("crash-sync", mode="sync", delay_ms=delay_ms, record_dir=str(record_dir)),
        Mock("crash-sync", mode="sync", delay_ms=delay_ms, record_dir=str(record_dir)),
        Mock("crash-async", mode="async", delay_ms=delay_ms, record_dir=str(record_dir)),
        Mock("crash-async", mode="async", delay_ms=delay_ms, record_dir=str(record_dir)),
    ]
    backends = start_backends(tmp_path, mocks)
    try:
        gateway.start()
        capability = unique("crash")
        owner = new_owner(gateway.api)
        bodies = [
            {
                "type": "crash-test",
                "priority": n % 3,
                "payload": {"n": n},
                "capabilities": [capability],
                "timeout": timeout_ms,
            }
            for n in range(scale.crash_tasks)
        ]

        # GIVEN every task accepted (no server can take them yet: all are in flight), then
        # the backends registered and the gateway part-way through the tasks
        task_ids = submit_all(gateway.api, owner, bodies)
        for backend in backends:
            register(gateway.api, backend, capability, slots, API_KEY)
        sample = task_ids[::10]  # reading all of them would take longer than the run
        eventually(
            lambda: status_counts(gateway.store, sample),
            lambda counts: counts["COMPLETED"] >= len(sample) // 10,
            timeout=60,
            what="a tenth of the tasks completed",
        )

        # WHEN it is killed with -9 and restarted on the same file
        gateway.kill9()
        at_kill = status_counts(gateway.store, task_ids)
        time.sleep(1.0)  # callbacks meanwhile hit a closed port
        gateway.start()

        # THEN every task ends COMPLETED, once per attempt, within a few task timeouts
        finals = wait_terminal(gateway.store, task_ids, timeout=60 if not scale.long else 300)
        proof = prove(
            "crash", gateway.store, task_ids, record_dir, backends, {b.server_id: slots for b in backends}
        )
        proof.extra = {"at_kill": dict(at_kill), "slots_per_backend": slots, "backends": len(backends)}
        from .proof import write_figures

        write_figures("crash", proof)
        assert at_kill["PENDING"] + at_kill["PROCESSING"] > 0, at_kill
        assert {task.status.value for task in finals.values()} == {"COMPLETED"}, proof.by_status
        assert API_KEY not in gateway.logs()
    finally:
        for backend in backends:
            _stop(backend.proc)
        gateway.close()

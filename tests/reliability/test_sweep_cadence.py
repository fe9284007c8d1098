"""Regression: a backend whose health endpoint hangs must not slow the sweeper. The sweeper
used to await every due health check before sleeping a full interval, so one server that
holds its health call for HEALTH_CHECK_TIMEOUT delayed every execution timeout by that much
(with the defaults, 5 s on top of the 5 s interval).

GIVEN a registered server whose health endpoint accepts connections and never answers, and a
task PROCESSING on another server with a deadline 300 ms away, WHEN the deadline passes,
THEN the task is timed out within two sweep intervals of it, not after the health check's
timeout.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.domain.ids import now_ms
from core.domain.models import TaskStatus
from tests.e2e.harness import HELD, unique
from tests.support.waiting import eventually

from .proof import Gateway

SWEEP_MS = 300
HEALTH_TIMEOUT_MS = 4000


@dataclass
class SilentPort:
    port: int
    accepted: list[socket.socket]


@pytest.fixture
def silent_port() -> Iterator[SilentPort]:
    """A loopback port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield SilentPort(int(listener.getsockname()[1]), accepted)
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_hanging_health_check_does_not_delay_timeouts(tmp_path: Path, silent_port: SilentPort) -> None:
    gateway = Gateway(
        tmp_path,
        SWEEP_INTERVAL=SWEEP_MS,
        HEALTH_CHECK_INTERVAL=100,
        HEALTH_CHECK_TIMEOUT=HEALTH_TIMEOUT_MS,
        HEARTBEAT_TIMEOUT=600_000,
        MAX_ATTEMPTS=1,
    )
    try:
        gateway.start()
        api = gateway.api
        hanging = f"http://127.0.0.1:{silent_port.port}"
        endpoints = {"predict": f"{hanging}/predict", "health": f"{hanging}/health"}
        api.post(
            "/api/servers",
            json={"id": unique("hangs"), "name": "hangs", "endpoints": endpoints},
            token=api.admin,
        ).ok()
        holder = {"id": unique("holder"), "name": "holder", "endpoints": endpoints, "capabilities": [HELD]}
        api.post("/api/servers", json=holder, token=api.admin).ok()
        # The checks of both are hanging: the two made at registration and the two of the
        # sweeper's own round (both servers are due: neither check ever returns).
        eventually(lambda: len(silent_port.accepted), lambda n: n >= 4, timeout=10, what="4 hanging checks")

        # GIVEN a task PROCESSING on the holder, due in 300 ms
        task_id = api.create_task(api.user())
        task = gateway.store.get_task(task_id)
        assert task is not None
        now = now_ms()
        deadline = now + 300
        changes = {
            "status": TaskStatus.PROCESSING,
            "server_id": holder["id"],
            "attempts": 1,
            "started_at": now,
            "updated_at": now,
            "deadline": deadline,
        }
        gateway.store.claim_task(task, changes)

        # THEN the sweeper times it out within two sweeps of the deadline
        timed_out = eventually(
            lambda: gateway.store.get_task(task_id),
            lambda t: t is not None and t.status is TaskStatus.TIMEOUT,
            timeout=HEALTH_TIMEOUT_MS / 1000 * 3,
            what="the overdue task timed out",
        )
        assert timed_out is not None and timed_out.completed_at is not None
        late = timed_out.completed_at - deadline
        assert late <= 2 * SWEEP_MS, f"timed out {late} ms after its deadline"
    finally:
        gateway.close()

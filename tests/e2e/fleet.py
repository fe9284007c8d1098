"""A gateway and a fleet of mock backends as real processes on loopback, for dispatch tests.

- `start_gateway`: one gateway with timers made fast for tests: `taskgate serve` on a SQLite
  file, or `taskgate dev --aws` (the Lambda code path on moto); the dispatch tests run on both
  (DEPLOYMENTS), with the same settings passed the same way, as environment.
- `start_backends`: `taskgate mock-backend` processes, started in parallel; `BackendPool`
  keeps a few started ahead of need for a gateway's tests, each then set up through `/_control`.
- `Fleet`: what one test starts, registers and submits on a (shared) gateway, and the checks
  every dispatch test ends with. Each test gets its own capability label, so its tasks only go
  to its own servers however many other tests share the gateway.

Every process is killed at teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from core.local.sqlite import SqliteStore
from tests.support.waiting import each_eventually, eventually

from .dev_aws_gateway import DOOR_LINE
from .harness import RATE_LIMITS_OFF, SECRET, Api, _free_port, unique

CLI = [sys.executable, "-m", "tools.cli"]
TERMINAL = frozenset({"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"})
# Sweeps and health checks every few hundred ms, short backoffs; a test module overrides what
# it needs (MAX_ATTEMPTS, QUEUE_TIMEOUT, ...) when it starts its gateway. RECONCILE_GRACE keeps
# its default: slot reconciliation at once would repair, and so hide, a leaked slot.
FAST_TIMERS = {
    "SWEEP_INTERVAL": "200",
    "HEALTH_CHECK_INTERVAL": "300",
    "HEALTH_CHECK_TIMEOUT": "500",
    "HEARTBEAT_TIMEOUT": "2000",
    "RETRY_BASE_DELAY": "50",
    "RETRY_MAX_DELAY": "200",
    "BUSY_RETRY_DELAY": "100",
    "FLEET_CACHE": "200",
}
# `dev --aws` answers every AWS call from moto, one at a time, at some 10-50 ms each on a
# loaded machine: a sweep there (twenty-odd calls) takes longer than 200 ms, so it sweeps
# less often, and what a test waits for may take PATIENCE times as long as on `serve`. The
# assertions stay the same; only how long a test waits for them grows.
DEV_AWS_TIMERS = {"SWEEP_INTERVAL": "500"}
PATIENCE = {"serve": 1.0, "dev-aws": 4.0}
STARTUP_S = 20.0
# The two deployments every dispatch test runs against (see start_gateway).
DEPLOYMENTS = ("serve", "dev-aws")
T = TypeVar("T")

_ports_given: set[int] = set()


def free_port() -> int:
    """A port no process started here was given (processes start in parallel)."""
    while (port := _free_port()) in _ports_given:
        pass
    _ports_given.add(port)
    return port


# -- processes -----------------------------------------------------------------------------


def _spawn(args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(list(args), env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_up(started: Sequence[tuple[subprocess.Popen[bytes], str, Path]], patience: float = 1.0) -> None:
    """Wait until every process answers GET /health (any status: a mock may start unhealthy)."""
    timeout = STARTUP_S * patience
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        for proc, base, log in started:

            def answers(proc: subprocess.Popen[bytes] = proc, base: str = base, log: Path = log) -> bool:
                assert proc.poll() is None, f"{base} exited with {proc.returncode}:\n{log.read_text()}"
                try:
                    client.get(f"{base}/health")
                except httpx.TransportError:
                    return False
                return True

            # One deadline for them all: they started together.
            left = max(0.0, deadline - time.monotonic())
            try:
                eventually(answers, timeout=left, what=f"{base} started", interval=0.03)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log.read_text()}") from None


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the gateway ---------------------------------------------------------------------------


class SlotCounts(Protocol):
    """The one write a test makes behind the gateway's back: a server's slot count."""

    def set_active_tasks(self, server_id: str, value: int, *, expected: int) -> bool: ...


@dataclass
class Gateway:
    deployment: str
    base: str
    proc: subprocess.Popen[bytes]
    log: Path
    api: Api
    # The gateway's storage as the test can reach it from outside: on `serve` its SQLite file
    # (WAL allows a second process), on `dev-aws` the side door of tests/e2e/dev_aws_gateway.py.
    store: SlotCounts
    settings: dict[str, str]
    backends: BackendPool

    door: DevAwsSideDoor | None = None

    @property
    def patience(self) -> float:
        """How many times longer than on `serve` a test waits for something here."""
        return PATIENCE[self.deployment]

    def set_algorithm(self, name: str) -> None:
        """Set the algorithm and wait out FLEET_CACHE: a dispatcher in another process (a
        Lambda container on dev-aws) keeps the one it read for up to that long (the
        documented bound), and nothing outside it shows which one it holds."""
        body = {"algorithm": name}
        reply = self.api.post("/api/stats/load-balancer/algorithm", json=body, token=self.api.admin).ok()
        assert reply["algorithm"] == name
        if self.deployment != "serve":  # one process: the change is used at once
            time.sleep(int(self.settings.get("FLEET_CACHE", "1000")) / 1000)


@contextlib.contextmanager
def start_gateway(
    tmp: Path, deployment: str = "serve", *, spares: int = 3, **settings: int | str
) -> Iterator[Gateway]:
    """A gateway with FAST_TIMERS and `settings` (environment names, e.g. MAX_ATTEMPTS=1), and
    a pool of `spares` mock backends for its tests. `deployment` is one of DEPLOYMENTS:
    `serve` (one machine, SQLite) or `dev-aws` (`taskgate dev --aws`: the Lambda code path on
    DynamoDB and SQS emulated by moto); both get the settings the same way, as environment."""
    assert deployment in DEPLOYMENTS, deployment
    timers = FAST_TIMERS if deployment == "serve" else {**FAST_TIMERS, **DEV_AWS_TIMERS}
    chosen = {**timers, **{name: str(value) for name, value in settings.items()}}
    env = {**os.environ, "JWT_SECRET": SECRET, **RATE_LIMITS_OFF, **chosen}
    port, log = free_port(), tmp / "gateway.log"
    base = f"http://127.0.0.1:{port}"
    door: DevAwsSideDoor | None = None
    if deployment == "serve":
        db = tmp / "gateway.db"
        proc = _spawn([*CLI, "serve", "--db", str(db), "--port", str(port)], log, env)
    else:
        door = DevAwsSideDoor(log)
        proc = _spawn([*door.command, "dev", "--aws", "--port", str(port)], log, env)
    pool: BackendPool | None = None
    try:
        pool = BackendPool(tmp, spares)
        # dev --aws imports boto3 and moto and builds its table before it answers
        _wait_up([(proc, base, log)], PATIENCE[deployment])
        with contextlib.ExitStack() as resources:
            store: SlotCounts
            if door is None:
                sqlite = SqliteStore(str(db))
                resources.callback(sqlite.close)
                store, api_store = sqlite, sqlite
            else:
                store, api_store = door, None
            client = resources.enter_context(httpx.Client(base_url=base, timeout=30.0))
            api = Api(deployment, client, api_store, SECRET)
            yield Gateway(deployment, base, proc, log, api, store, chosen, pool, door)
    finally:
        if pool is not None:
            pool.close()
        _stop(proc, signal.SIGTERM)


class DevAwsSideDoor:
    """Reaches the store of a `dev --aws` gateway, whose emulated table lives in its memory:
    the gateway runs as tests/e2e/dev_aws_gateway.py, which is `taskgate dev --aws` plus a
    loopback endpoint that makes this one write (it prints its address first)."""

    command = [sys.executable, "-m", "tests.e2e.dev_aws_gateway"]

    def __init__(self, log: Path) -> None:
        self.log = log

    @property
    def base(self) -> str:
        printed = [line for line in self.log.read_text().splitlines() if line.startswith(DOOR_LINE)]
        assert printed, f"no side door in {self.log}"
        return printed[0].removeprefix(DOOR_LINE)

    def set_active_tasks(self, server_id: str, value: int, *, expected: int) -> bool:
        body = {"serverId": server_id, "value": value, "expected": expected}
        reply = httpx.post(f"{self.base}/set-active-tasks", json=body, timeout=10.0)
        assert reply.status_code == 200, reply.text
        return bool(reply.json()["changed"])

    def queue_idle(self) -> bool:
        reply = httpx.get(f"{self.base}/queue-idle", timeout=10.0)
        assert reply.status_code == 200, reply.text
        return bool(reply.json()["idle"])


# -- backends ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mock:
    """How to start one `taskgate mock-backend`. `prefix` starts its server id: ties in the
    balancer go to the lower id, so "a-..." is tried before "b-..."."""

    prefix: str = "srv"
    mode: str = "sync"
    delay_ms: int = 0
    fail_rate: float = 0
    busy_rate: float = 0
    fail_status: int = 500
    lose_callback_rate: float = 0
    progress_steps: int = 1
    unhealthy: bool = False
    # The model.server_id its /health reports; None: the id it is registered under.
    reports_id: str | None = None
    stall_rate: float = 0
    stall_ms: int = 0
    # A folder where it records every predict call to <server id>.jsonl (--record).
    record_dir: str | None = None

    def flags(self, server_id: str) -> list[str]:
        flags = [
            f"--mode={self.mode}",
            f"--delay-ms={self.delay_ms}",
            f"--fail-rate={self.fail_rate}",
            f"--busy-rate={self.busy_rate}",
            f"--fail-status={self.fail_status}",
            f"--lose-callback-rate={self.lose_callback_rate}",
            f"--progress-steps={self.progress_steps}",
            f"--server-id={self.reports_id or server_id}",
            f"--name={server_id}",
            "--seed=7",
            f"--stall-rate={self.stall_rate}",
            f"--stall-ms={self.stall_ms}",
        ]
        if self.record_dir is not None:
            flags.append(f"--record={self.record_dir}/{server_id}.jsonl")
        return [*flags, "--unhealthy"] if self.unhealthy else flags

    def settings(self, server_id: str) -> dict[str, Any]:
        """The same, as a `/_control` body: how a started spare is given this behaviour."""
        return {
            "mode": self.mode,
            "delayMs": self.delay_ms,
            "failRate": self.fail_rate,
            "busyRate": self.busy_rate,
            "failStatus": self.fail_status,
            "loseCallbackRate": self.lose_callback_rate,
            "progressSteps": self.progress_steps,
            "healthy": not self.unhealthy,
            "serverId": self.reports_id or server_id,
            "stallRate": self.stall_rate,
            "stallMs": self.stall_ms,
        }


@dataclass(eq=False)
class Backend:
    server_id: str
    base: str
    proc: subprocess.Popen[bytes]
    log: Path
    mock: Mock
    # Its --name, which it puts in every result as "server".
    name: str
    # The last /_stats read: what a killed backend had seen.
    last_stats: dict[str, Any] | None = None

    @property
    def endpoints(self) -> dict[str, str]:
        return {
            "predict": f"{self.base}/predict",
            "health": f"{self.base}/health",
            "metrics": f"{self.base}/metrics",
        }

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stats(self) -> dict[str, Any]:
        if not self.alive:
            assert self.last_stats is not None, f"{self.server_id} died before its stats were read"
            return self.last_stats
        reply = httpx.get(f"{self.base}/_stats", timeout=10.0)
        assert reply.status_code == 200, reply.text
        self.last_stats = reply.json()
        return self.last_stats

    def received(self, task_id: str) -> int:
        return int(self.stats()["byTask"].get(task_id, 0))

    def wait_received(self, task_id: str, times: int = 1, timeout: float = 5.0) -> None:
        eventually(
            lambda: self.received(task_id),
            lambda n: n >= times,
            timeout=timeout,
            what=f"{self.server_id} received {task_id} {times} time(s)",
        )

    def control(self, **changes: Any) -> dict[str, Any]:
        reply = httpx.post(f"{self.base}/_control", json=changes, timeout=10.0)
        assert reply.status_code == 200, reply.text
        settings: dict[str, Any] = reply.json()
        return settings

    def kill(self) -> None:
        """kill -9, after reading what it received so far."""
        self.stats()
        _stop(self.proc, signal.SIGKILL)


def start_backends(tmp: Path, mocks: Sequence[Mock]) -> list[Backend]:
    """Start every mock at once and wait for all; on failure none is left running."""
    started: list[Backend] = []
    try:
        for mock in mocks:
            server_id, port = unique(mock.prefix), free_port()
            log = tmp / f"{server_id}.log"
            args = [*CLI, "mock-backend", "--port", str(port), *mock.flags(server_id)]
            base = f"http://127.0.0.1:{port}"
            started.append(Backend(server_id, base, _spawn(args, log), log, mock, server_id))
        _wait_up([(b.proc, b.base, b.log) for b in started])
    except BaseException:
        for backend in started:
            _stop(backend.proc)
        raise
    return started


class BackendPool:
    """Mock backends started before a test needs them, so tests do not each wait for Python
    to start. A spare serves one test and is killed with it, so nothing carries over; the pool
    starts replacements in the background while that test runs."""

    def __init__(self, tmp: Path, spares: int) -> None:
        self.tmp = tmp
        self.spares = spares
        self.ready: list[tuple[subprocess.Popen[bytes], str, Path]] = []
        self.started: list[subprocess.Popen[bytes]] = []
        self._launch(spares)

    def _launch(self, count: int) -> None:
        for _ in range(count):
            port = free_port()
            log = self.tmp / f"mock-{port}.log"
            args = [*CLI, "mock-backend", "--port", str(port), f"--name={log.stem}", "--seed=7"]
            proc = _spawn(args, log)
            self.started.append(proc)
            self.ready.append((proc, f"http://127.0.0.1:{port}", log))

    def take(self, mocks: Sequence[Mock]) -> list[Backend]:
        """Backends that behave as `mocks` say, each with a fresh server id and zero stats."""
        self._launch(max(0, len(mocks) - len(self.ready)))
        taken, self.ready = self.ready[: len(mocks)], self.ready[len(mocks) :]
        _wait_up(taken)
        backends = []
        for mock, (proc, base, log) in zip(mocks, taken, strict=True):
            backend = Backend(unique(mock.prefix), base, proc, log, mock, name=log.stem)
            backend.control(**mock.settings(backend.server_id))
            backends.append(backend)
        self._launch(self.spares - len(self.ready))
        return backends

    def close(self) -> None:
        for proc in self.started:
            _stop(proc)


# -- one test's fleet ----------------------------------------------------------------------


class Fleet:
    """One test's backends, servers and tasks on a gateway; `close` kills and unregisters."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.api = gateway.api
        self.capability = unique("cap")
        self.owner = self.api.user()
        self.backends: list[Backend] = []
        self.server_ids: list[str] = []
        self.task_ids: list[str] = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            for server_id in self.server_ids:
                self.api.delete(f"/api/servers/{server_id}", token=self.api.admin)
        finally:
            for backend in self.backends:
                _stop(backend.proc)

    # -- backends and servers --------------------------------------------------------------

    def start(self, *mocks: Mock) -> list[Backend]:
        started = self.gateway.backends.take(mocks)
        self.backends.extend(started)
        return started

    def register(
        self,
        backend: Backend,
        *,
        max_concurrent: int = 10,
        priority: int = 1,
        capabilities: list[str] | None = None,
        cancel: bool = False,
    ) -> None:
        """POST /api/servers with the backend's id and this test's capability."""
        endpoints = dict(backend.endpoints)
        if cancel:
            endpoints["cancel"] = f"{backend.base}/cancel"
        body = {
            "id": backend.server_id,
            "name": backend.server_id,
            "endpoints": endpoints,
            "maxConcurrent": max_concurrent,
            "priority": priority,
            "capabilities": [self.capability] if capabilities is None else capabilities,
        }
        reply = self.api.post("/api/servers", json=body, token=self.api.admin).ok()
        assert reply["serverId"] == backend.server_id
        self.server_ids.append(backend.server_id)

    def add(self, *mocks: Mock, **registration: Any) -> list[Backend]:
        """Start the mocks and register each (same registration settings for all)."""
        started = self.start(*mocks)
        for backend in started:
            self.register(backend, **registration)
        return started

    def server(self, server_id: str) -> dict[str, Any]:
        return self.api.server(server_id)

    # -- tasks -----------------------------------------------------------------------------

    def body(self, priority: int = 1, **fields: Any) -> dict[str, Any]:
        return {
            "type": "e2e-dispatch",
            "priority": priority,
            "payload": {"n": len(self.task_ids)},
            "capabilities": [self.capability],
            **fields,
        }

    def submit(self, priority: int = 1, **fields: Any) -> str:
        """POST /api/task as this test's user (for this test's capability unless given)."""
        reply = self.api.post("/api/task", json=self.body(priority, **fields), token=self.owner).ok()
        self.task_ids.append(reply["id"])
        return str(reply["id"])

    def submit_and_wait(self, priority: int = 1, **fields: Any) -> dict[str, Any]:
        """`async: false`: the finished task in the POST's reply."""
        body = self.body(priority, **{"async": False, **fields})
        task: dict[str, Any] = self.api.post("/api/task", json=body, token=self.owner).ok()
        self.task_ids.append(task["id"])
        return task

    def task(self, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.api.get(f"/api/task/{task_id}", token=self.owner).ok()
        return body

    def cancel(self, task_id: str) -> None:
        self.api.post(f"/api/task/{task_id}/cancel", token=self.owner).ok()

    def retry(self, task_id: str) -> None:
        self.api.post(f"/api/task/{task_id}/retry", token=self.owner).ok()

    def eventually(
        self, read: Callable[[], T], until: Callable[[T], bool], *, timeout: float, what: str
    ) -> T:
        """`eventually`, with `timeout` (as on `serve`) stretched by the gateway's patience."""
        return eventually(read, until, timeout=timeout * self.gateway.patience, what=what)

    def dispatcher_caught_up(self) -> None:
        """Returns once the gateway's dispatcher has looked at every task PENDING at the call
        (of priority above 0) in the state the call found: after this, a task still PENDING
        is one it could not place, not one it has not reached yet. The event a test waits on
        to show that something did NOT happen, instead of sleeping.

        `dev-aws`: the dispatch queue idle (every message sent before, each task's own and
        every drain, handled and deleted). `serve`: a marker task at priority 0, for a
        capability only a server registered after it has, is started; the registration's
        drain reads the PENDING index in priority order, so it reached every other task first."""
        if self.gateway.door is not None:
            door = self.gateway.door
            self.eventually(door.queue_idle, bool, timeout=10, what="the dispatch queue idle")
            return
        marker = unique("marker")
        task_id = self.submit(priority=0, capabilities=[marker])
        (backend,) = self.start(Mock("marker"))
        self.register(backend, capabilities=[marker])
        self.wait_status(task_id, "COMPLETED")

    def wait_status(self, task_id: str, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
        return self.eventually(
            lambda: self.task(task_id),
            lambda t: t["status"] in statuses,
            timeout=timeout,
            what=f"task {task_id} {'/'.join(statuses)}",
        )

    def wait_terminal(self, task_ids: Collection[str] | None = None, timeout: float = 15.0) -> dict[str, Any]:
        """Poll GET until every task is terminal (only the unfinished ones are read again);
        `timeout` as on `serve`, stretched by the gateway's patience."""
        return each_eventually(
            list(self.task_ids if task_ids is None else task_ids),
            self.task,
            lambda task: task["status"] in TERMINAL,
            timeout=timeout * self.gateway.patience,
            what="terminal",
            describe=lambda stragglers: {t: task["status"] for t, task in stragglers.items()},
        )

    # -- the checks every dispatch test ends with ------------------------------------------

    def assert_settled(self, *, busy: Collection[Backend] = ()) -> dict[str, dict[str, Any]]:
        """Every task terminal; each task received by the backends exactly once per attempt
        (answers of `busy` backends are not attempts, so they are left out); every server's
        slots free again. Returns the tasks."""
        tasks = {task_id: self.task(task_id) for task_id in self.task_ids}
        unfinished = {t["id"]: t["status"] for t in tasks.values() if t["status"] not in TERMINAL}
        assert not unfinished, f"tasks not terminal: {unfinished}"
        received: Counter[str] = Counter()
        for backend in self.backends:
            if backend not in busy:
                received.update(backend.stats()["byTask"])
        sent = {task_id: (received[task_id], task["attempts"]) for task_id, task in tasks.items()}
        assert all(got == attempts for got, attempts in sent.values()), f"(received, attempts): {sent}"
        strangers = set(received) - set(tasks)
        assert not strangers, f"backends received tasks this test did not submit: {strangers}"
        listed = self.api.servers()
        active = {server_id: listed[server_id]["activeTasks"] for server_id in self.server_ids}
        assert set(active.values()) <= {0}, f"slots still taken: {active}"
        return tasks

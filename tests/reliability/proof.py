"""What the reliability runs share: a `taskgate serve` that can be killed and restarted on
the same file and port, the backends' records of every predict call, and the checks that turn
those records into proofs (none lost, no attempt sent twice, no server overbooked, no slot
leaked) and into the figures docs/RELIABILITY.md reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.domain.models import Task
from core.local.sqlite import SqliteStore
from tests.e2e.fleet import CLI, FAST_TIMERS, TERMINAL, Backend, _spawn, _stop, _wait_up, free_port
from tests.e2e.harness import RATE_LIMITS_OFF, SECRET, Api, unique
from tests.support.waiting import each_eventually

FIGURES_DIR = Path(os.environ.get("TASKGATE_FIGURES_DIR", "/tmp/taskgate-reliability"))


class Gateway:
    """`taskgate serve` on one SQLite file and one port (backends keep their callback URL)
    across kills and restarts."""

    def __init__(self, tmp: Path, **settings: int | str) -> None:
        self.tmp = tmp
        self.db = tmp / "gateway.db"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "JWT_SECRET": SECRET,
            **RATE_LIMITS_OFF,
            **FAST_TIMERS,
            **{name: str(value) for name, value in settings.items()},
        }
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.base, timeout=30.0)
        self.store = SqliteStore(str(self.db))
        self.api = Api("serve", self.client, self.store, SECRET)

    def start(self) -> None:
        self.runs += 1
        log = self.tmp / f"gateway-{self.runs}.log"
        args = [*CLI, "serve", "--db", str(self.db), "--port", str(self.port)]
        self.proc = _spawn(args, log, self.env)
        _wait_up([(self.proc, self.base, log)])

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "the gateway is not running"
        _stop(self.proc, signal.SIGKILL)
        assert self.proc.returncode == -signal.SIGKILL

    def close(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGTERM)
        self.client.close()
        self.store.close()

    def logs(self) -> str:
        return "".join(log.read_text(errors="replace") for log in sorted(self.tmp.glob("gateway-*.log")))


def started_gateway(tmp: Path, **settings: int | str) -> Iterator[Gateway]:
    gateway = Gateway(tmp, **settings)
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.close()


def submit_all(api: Api, token: str, bodies: list[dict[str, Any]], workers: int = 8) -> list[str]:
    """POST every body (a few at a time); each must be accepted."""

    def submit(body: dict[str, Any]) -> str:
        return str(api.post("/api/task", json=body, token=token).ok()["id"])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(submit, bodies))


def wait_terminal(store: SqliteStore, task_ids: Iterable[str], timeout: float) -> dict[str, Any]:
    """Read the tasks from the store until every one is terminal; fail naming the stragglers."""

    def read(task_id: str) -> Task:
        task = store.get_task(task_id)
        assert task is not None, f"task {task_id} is lost: not in the store"
        return task

    return each_eventually(
        set(task_ids),
        read,
        lambda task: task.status.value in TERMINAL,
        timeout=timeout,
        what="terminal",
        interval=0.1,
        describe=lambda stragglers: {
            t: (s.status.value, s.attempts, s.server_id) for t, s in stragglers.items()
        },
    )


# -- what the backends saw -----------------------------------------------------------------


def records(folder: Path) -> list[dict[str, Any]]:
    """Every predict call the backends recorded (a killed backend's lines included)."""
    lines: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():  # a backend killed mid-write leaves at most a partial last line
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    assert line is path.read_text().splitlines()[-1], f"corrupt record in {path}: {line}"
    return lines


@dataclass
class Proof:
    """What a run's records and final state show."""

    tasks: int
    terminal: int = 0
    lost: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    predict_calls: int = 0
    attempts_received: int = 0
    duplicate_attempts: int = 0
    busy_answers: int = 0
    failed_answers: int = 0
    stalled: int = 0
    leaked_slots: int = 0
    max_concurrency: dict[str, int] = field(default_factory=dict)
    max_concurrent_allowed: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "by_status": dict(self.by_status)}


def prove(
    name: str,
    store: SqliteStore,
    task_ids: list[str],
    record_dir: Path,
    backends: Iterable[Backend],
    allowed: dict[str, int],
    **extra: Any,
) -> Proof:
    """Check a finished run: every task terminal and stored, no attempt received twice (busy
    answers hand the attempt back, so they are not attempts), every attempt received was
    counted by the task, no backend above its maxConcurrent, every slot free."""
    proof = Proof(tasks=len(task_ids), extra=extra)
    finals = {}
    for task_id in task_ids:
        task = store.get_task(task_id)
        if task is None:
            proof.lost += 1
            continue
        finals[task_id] = task
        proof.by_status[task.status.value] += 1
        proof.terminal += task.status.value in TERMINAL
    seen = records(record_dir)
    proof.predict_calls = len(seen)
    attempts = Counter((r["task"], r["attempt"]) for r in seen if r["outcome"] != "busy")
    proof.attempts_received = len(attempts)
    proof.duplicate_attempts = sum(n - 1 for n in attempts.values())
    outcomes = Counter(r["outcome"] for r in seen)
    proof.busy_answers, proof.failed_answers, proof.stalled = (
        outcomes["busy"],
        outcomes["failed"],
        outcomes["stalled"],
    )
    strangers = {task for task, _ in attempts} - set(task_ids)
    beyond = {(t, a) for t, a in attempts if t in finals and not 1 <= a <= finals[t].attempts}
    for backend in backends:
        proof.max_concurrency[backend.server_id] = int(backend.stats()["maxConcurrency"])
    proof.max_concurrent_allowed = dict(allowed)
    for server in store.list_servers():
        if server.id in allowed:
            proof.leaked_slots += server.active_tasks
    write_figures(name, proof)
    assert proof.lost == 0, f"{proof.lost} tasks lost"
    assert proof.terminal == proof.tasks, f"not terminal: {proof.by_status}"
    duplicates = {key: n for key, n in attempts.items() if n > 1}
    assert not duplicates, f"attempts sent more than once: {list(duplicates.items())[:10]}"
    assert not strangers, f"backends received tasks never submitted: {sorted(strangers)[:5]}"
    assert not beyond, f"attempts received that the task never counted: {sorted(beyond)[:5]}"
    over = {s: (n, allowed[s]) for s, n in proof.max_concurrency.items() if n > allowed[s]}
    assert not over, f"backends above maxConcurrent (seen, allowed): {over}"
    assert proof.leaked_slots == 0, (
        f"slots still taken: {[(s.id, s.active_tasks) for s in store.list_servers()]}"
    )
    return proof


def write_figures(name: str, proof: Proof) -> None:
    """Kept for docs/RELIABILITY.md: the figures of the last run of each scenario."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    (FIGURES_DIR / f"{name}.json").write_text(json.dumps(proof.as_dict(), indent=2, sort_keys=True))


def new_owner(api: Api) -> str:
    return api.token("user", unique("owner"))


def status_counts(store: SqliteStore, task_ids: Iterable[str]) -> Counter[str]:
    found = (store.get_task(task_id) for task_id in task_ids)
    return Counter(task.status.value if task else "LOST" for task in found)


def register(api: Api, backend: Backend, capability: str, max_concurrent: int, api_key: str) -> None:
    body = {
        "id": backend.server_id,
        "name": backend.server_id,
        "endpoints": backend.endpoints,
        "maxConcurrent": max_concurrent,
        "capabilities": [capability],
        "apiKey": api_key,
    }
    assert api.post("/api/servers", json=body, token=api.admin).ok()["serverId"] == backend.server_id

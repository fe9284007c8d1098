"""Statistics: counters derived from task writes and health observations, and the views the
stats routes return.

Counting never reads. `increments` maps one task write (the task as written and its previous
status) to counter increments, so the same function counts on one machine (a `LocalEvents`
listener, `Recorder`) and in AWS (a DynamoDB Streams consumer fed new images and old statuses;
`merge` makes a batch cost one write per key).

| Key                      | Names                                          | Written when              |
|--------------------------|------------------------------------------------|---------------------------|
| hour:<YYYY-MM-DD>T<HH>   | created, completed, failed, timed_out,         | created, finished,        |
|                          | cancelled, retried, processing_ms              | retried                   |
| server:<YYYY-MM-DD>:<id> | completed, failed, timed_out, processing_ms    | finished on server <id>   |
| health:<YYYY-MM-DD>:<id> | observations, healthy                          | heartbeat, health check   |

A day is the sum of its 24 hours (one read of 24 keys), so a task costs one counter write when
created, none when dispatched and two when it finishes (its hour, its server). Counters expire
after RETENTION_DAYS.

What is counted, all in UTC:
- created in the hour of `created_at`; finished (COMPLETED, FAILED, TIMEOUT, CANCELLED) in the
  hour of `completed_at`; a retry (FAILED, TIMEOUT or CANCELLED back to PENDING) when it is
  made. An attempt that failed and went back to the queue is not counted: the task is not
  finished (the server's lifetime `failureCount` in /api/servers/:id/metrics has it).
- failed = FAILED + TIMEOUT (a queue timeout included). A task finished twice (failed,
  retried, completed) counts in each.
- Per server: the tasks that finished there (COMPLETED, FAILED, TIMEOUT; not CANCELLED).
- averageProcessingTime: COMPLETED tasks, from the dispatch of the last attempt to completion.
- successRate with nothing processed is 0; so is `uptime` on a day without observations (no
  observation is no evidence that the server was up).
- A server's stats for a day are 404 only if it is not registered and has no counters that
  day: an unregistered server's history stays readable until its counters expire.
- topServers ranks the registered servers (ties by id), leaving out those that processed
  nothing that day.
- pendingTasks is the current backlog (Store.count_pending, from the PENDING index).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import re
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from core.domain import auth, balancer
from core.domain.auth import Principal
from core.domain.models import Server, Task, TaskStatus
from core.domain.schemas import SetAlgorithm
from core.errors import NotFoundError, ValidationError
from core.ports.storage import CounterStore
from core.services import dispatch
from core.services.context import Context

log = logging.getLogger(__name__)

Increments = dict[str, dict[str, int]]

RETENTION_DAYS = 35
TOP_SERVERS = 5
# Dispatch latency buckets, in seconds (Prometheus `le` bounds).
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

_FINISHED = {
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.TIMEOUT: "timed_out",
    TaskStatus.CANCELLED: "cancelled",
}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


# -- counting --------------------------------------------------------------------------------


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, UTC)


def hour_key(ms: int) -> str:
    return _hour_key(ms // 3_600_000)


@functools.lru_cache(maxsize=64)
def _hour_key(hour: int) -> str:
    at = _utc(hour * 3_600_000)
    return f"hour:{at.date().isoformat()}T{at.hour:02d}"


def hour_keys(day: date) -> list[str]:
    return [f"hour:{day.isoformat()}T{hour:02d}" for hour in range(24)]


def server_key(day: date, server_id: str) -> str:
    return f"server:{day.isoformat()}:{server_id}"


def health_key(day: date, server_id: str) -> str:
    return f"health:{day.isoformat()}:{server_id}"


def increments(task: Task, previous: TaskStatus | None) -> Increments:
    """What one write of `task` adds to the counters; `previous` is its status before the
    write (None: it was created)."""
    status = task.status
    if previous is None:
        return {hour_key(task.created_at): {"created": 1}}
    if status is previous:
        return {}  # progress, or a write that changed no status
    if status is TaskStatus.PENDING:
        # From a finished state it is a retry; from PROCESSING an attempt went back to the queue.
        return {hour_key(task.queued_at): {"retried": 1}} if previous.is_terminal else {}
    if not status.is_terminal:
        return {}  # dispatched
    at = task.completed_at if task.completed_at is not None else task.updated_at
    counts = {_FINISHED[status]: 1}
    if status is TaskStatus.COMPLETED:
        counts["processing_ms"] = max(0, at - (task.started_at if task.started_at is not None else at))
    found = {hour_key(at): counts}
    if (
        task.server_id is not None
        and previous is TaskStatus.PROCESSING
        and status is not TaskStatus.CANCELLED
    ):
        found[server_key(_utc(at).date(), task.server_id)] = dict(counts)
    return found


def merge(batches: Iterable[Mapping[str, Mapping[str, int]]]) -> Increments:
    """The increments of many writes as one, so that applying them costs one write per key."""
    merged: Increments = {}
    for batch in batches:
        for key, counts in batch.items():
            into = merged.setdefault(key, {})
            for name, amount in counts.items():
                into[name] = into.get(name, 0) + amount
    return merged


def expiry_s(now: int) -> int:
    """When counters written at `now` (ms) may be dropped, in epoch seconds."""
    return now // 1000 + RETENTION_DAYS * 86_400


def apply(store: CounterStore, found: Mapping[str, Mapping[str, int]], *, expires_at: int) -> None:
    for key, counts in found.items():
        if counts:
            store.add_counters(key, counts, expires_at=expires_at)


def record(store: CounterStore, task: Task, previous: TaskStatus | None, expires_at: int) -> None:
    apply(store, increments(task, previous), expires_at=expires_at)


def record_health(store: CounterStore, server_id: str, healthy: bool, now: int) -> None:
    """Count one health observation (heartbeat or check). Best effort: a lost count must not
    fail the heartbeat that was otherwise recorded."""
    counts = {"observations": 1, "healthy": 1} if healthy else {"observations": 1}
    try:
        store.add_counters(health_key(_utc(now).date(), server_id), counts, expires_at=expiry_s(now))
    except Exception:
        log.exception("health observation not counted", extra={"server_id": server_id})


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics: a value counts in every `le` >= it)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self.sum += value

    def buckets(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count), ending with (inf, total)."""
        total, found = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            total += count
            found.append((bound, total))
        return found


class Recorder:
    """The `LocalEvents` listener that counts every task write as it happens, and this
    process's dispatch latency (time from entering PENDING to PROCESSING). It never fails the
    write it observes: a lost count is logged.

    With `batch_s` (one machine), counts made inside a running event loop are merged and
    written `batch_s` later, one write per key, instead of two or three writes per task: at a
    few hundred tasks a second that is most of the store's write load. Every read of the
    counters calls `flush` first (see `read_counters`), so a reader in this process never sees
    them late; a crash loses at most `batch_s` of counts, never a task.
    """

    def __init__(self, ctx: Context, *, batch_s: float | None = None) -> None:
        self.ctx = ctx
        self.dispatch_latency = Histogram(LATENCY_BUCKETS_S)
        self.batch_s = batch_s
        self._pending: Increments = {}
        self._flush_scheduled = False
        self._lock = threading.Lock()

    def __call__(self, task: Task, previous: TaskStatus | None) -> None:
        if previous is TaskStatus.PENDING and task.status is TaskStatus.PROCESSING:
            started = task.started_at if task.started_at is not None else task.updated_at
            self.dispatch_latency.observe(max(0, started - task.queued_at) / 1000)
        found = increments(task, previous)
        if not found:
            return
        loop = _running_loop() if self.batch_s is not None else None
        if loop is None:
            self._write(found)
            return
        with self._lock:
            self._pending = merge([self._pending, found])
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        loop.call_later(self.batch_s or 0, self.flush)

    def flush(self) -> None:
        """Write the counts held back so far."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flush_scheduled = False
        if pending:
            self._write(pending)

    def _write(self, found: Increments) -> None:
        try:
            apply(self.ctx.store, found, expires_at=expiry_s(self.ctx.now()))
        except Exception:
            log.exception("task statistics not counted: %s", found)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def read_counters(ctx: Context, keys: Collection[str]) -> dict[str, dict[str, int]]:
    """The counters, after this process's held-back counts are written."""
    found = recorder(ctx)
    if found is not None:
        found.flush()
    return ctx.store.get_counters(keys)


def recorder(ctx: Context) -> Recorder | None:
    """The Recorder listening to this context's task events, if any (one machine)."""
    listeners = getattr(ctx.events, "listeners", [])
    return next((found for found in listeners if isinstance(found, Recorder)), None)


# -- views -----------------------------------------------------------------------------------


def parse_day(text: str | None, now: int) -> date:
    """`?date=` as a UTC day; today when absent."""
    if text is None:
        return _utc(now).date()
    if _DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    shown = text if len(text) <= 32 else text[:32] + "..."
    raise ValidationError(f"Invalid query parameter date: expected a date as YYYY-MM-DD, got {shown!r}")


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def average(total: int, count: int) -> int:
    return round(total / count) if count else 0


def sum_counts(buckets: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for bucket in buckets:
        for name, amount in bucket.items():
            total[name] = total.get(name, 0) + amount
    return total


def server_view(server_id: str, counts: Mapping[str, int]) -> dict[str, Any]:
    success = counts.get("completed", 0)
    failure = counts.get("failed", 0) + counts.get("timed_out", 0)
    return {
        "serverId": server_id,
        "tasksProcessed": success + failure,
        "successCount": success,
        "failureCount": failure,
        "successRate": _ratio(success, success + failure),
        "averageProcessingTime": average(counts.get("processing_ms", 0), success),
    }


def task_stats(ctx: Context, principal: Principal, date_text: str | None) -> dict[str, Any]:
    auth.require_any(principal, auth.USER, auth.ADMIN)
    day = parse_day(date_text, ctx.now())
    servers = ctx.store.list_servers()
    hours = hour_keys(day)
    found = read_counters(ctx, [*hours, *(server_key(day, s.id) for s in servers)])
    by_hour = [found.get(key, {}) for key in hours]
    total = sum_counts(by_hour)
    ranked = [server_view(s.id, found.get(server_key(day, s.id), {})) for s in servers]
    ranked = sorted(
        (v for v in ranked if v["tasksProcessed"]), key=lambda v: (-v["tasksProcessed"], v["serverId"])
    )
    return {
        "totalTasks": total.get("created", 0),
        "pendingTasks": ctx.store.count_pending(),
        "successfulTasks": total.get("completed", 0),
        "failedTasks": total.get("failed", 0) + total.get("timed_out", 0),
        "retriedTasks": total.get("retried", 0),
        "averageProcessingTime": average(total.get("processing_ms", 0), total.get("completed", 0)),
        "serverCount": len(servers),
        "topServers": [
            {key: view[key] for key in ("serverId", "tasksProcessed", "successRate")}
            for view in ranked[:TOP_SERVERS]
        ],
        "hourlyTrend": [
            {"hour": hour, "tasks": counts.get("created", 0)} for hour, counts in enumerate(by_hour)
        ],
    }


def hourly_report(ctx: Context, principal: Principal, date_text: str | None) -> dict[str, Any]:
    auth.require_any(principal, auth.USER, auth.ADMIN)
    day = parse_day(date_text, ctx.now())
    hours = hour_keys(day)
    found = read_counters(ctx, hours)
    return {"date": day.isoformat(), "hours": hour_rows(hours, found)}


def hour_rows(hours: Sequence[str], found: Mapping[str, Mapping[str, int]]) -> list[dict[str, int]]:
    """A day's report, hour by hour, from its hourly counters (the keys `hour_keys` gives)."""
    rows = []
    for hour, key in enumerate(hours):
        counts = found.get(key, {})
        rows.append(
            {
                "hour": hour,
                "created": counts.get("created", 0),
                "completed": counts.get("completed", 0),
                "failed": counts.get("failed", 0) + counts.get("timed_out", 0),
                "averageTime": average(counts.get("processing_ms", 0), counts.get("completed", 0)),
            }
        )
    return rows


def server_stats(ctx: Context, principal: Principal, server_id: str, date_text: str | None) -> dict[str, Any]:
    auth.require_any(principal, auth.USER, auth.ADMIN)
    day = parse_day(date_text, ctx.now())
    tasks_key, health = server_key(day, server_id), health_key(day, server_id)
    found = read_counters(ctx, [tasks_key, health])
    if not found and ctx.store.get_server(server_id) is None:
        raise NotFoundError(f"Server not found: {server_id}")
    observed = found.get(health, {})
    return {
        **server_view(server_id, found.get(tasks_key, {})),
        "uptime": _ratio(observed.get("healthy", 0), observed.get("observations", 0)),
    }


def load_balancer(ctx: Context, principal: Principal) -> dict[str, Any]:
    auth.require_any(principal, auth.USER, auth.ADMIN)
    return load_view(ctx, ctx.store.list_servers())


def load_view(ctx: Context, servers: list[Server]) -> dict[str, Any]:
    """The LoadBalancerStatus body for `servers`."""
    loads = [s.active_tasks / s.max_concurrent for s in servers]
    return {
        "algorithm": dispatch.algorithm(ctx),
        "serverDistribution": {
            s.id: {"load": round(load, 4), "activeTasks": s.active_tasks, "weight": s.priority}
            for s, load in zip(servers, loads, strict=True)
        },
        "totalActiveTasks": sum(s.active_tasks for s in servers),
        "averageLoad": round(sum(loads) / len(loads), 4) if loads else 0.0,
    }


def set_algorithm(ctx: Context, principal: Principal, body: SetAlgorithm) -> str:
    auth.require_admin(principal)
    if body.algorithm not in balancer.ALGORITHMS:
        raise ValidationError(
            f"Invalid field algorithm: {body.algorithm!r} is not one of {', '.join(balancer.ALGORITHMS)}"
        )
    ctx.store.put_setting(dispatch.ALGORITHM_SETTING, body.algorithm)
    ctx.fleet.invalidate(settings=True)  # this process dispatches with it at once; others within FLEET_CACHE
    return body.algorithm


# -- /metrics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gauges:
    """What /metrics reports from the store: the backlog, the tasks in flight (the slots in
    use: a task is PROCESSING exactly while it holds one), today's finished tasks by status,
    and the servers."""

    pending: int
    processing: int
    finished_today: dict[str, int]
    servers: list[Server]


def gauges(ctx: Context) -> Gauges:
    servers = ctx.store.list_servers()
    today = sum_counts(read_counters(ctx, hour_keys(_utc(ctx.now()).date())).values())
    return Gauges(
        pending=ctx.store.count_pending(),
        processing=sum(s.active_tasks for s in servers),
        finished_today={status.value: today.get(name, 0) for status, name in _FINISHED.items()},
        servers=servers,
    )

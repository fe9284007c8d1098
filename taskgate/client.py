"""A synchronous client of taskgate's HTTP API.

    from taskgate.client import Client

    with Client("http://localhost:8787", token) as client:
        created = client.create_task("video-processing", {"video_url": "https://..."})
        task = client.wait(created.id, on_progress=lambda t: print(t.status, t.progress))

One httpx connection pool per client; every call returns a typed value (`taskgate.models`)
or raises a `taskgate.errors.TaskgateError` subclass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, overload

import httpx

from taskgate._http import Connection, Day, day_query, segment
from taskgate.errors import RateLimited, WaitTimeout
from taskgate.models import (
    AlgorithmSet,
    HeartbeatReply,
    HourlyReport,
    LoadBalancerStatus,
    MaintenanceReply,
    Server,
    ServerList,
    ServerMetrics,
    ServerRegistered,
    ServerStats,
    ServerUnregistered,
    Task,
    TaskAction,
    TaskCreated,
    TaskStats,
)

__all__ = ["Client"]

# `async_=False` makes the gateway hold the request up to 25 s before it answers.
SYNC_CREATE_TIMEOUT = 40.0
# wait(): the pause between polls grows from the first to the last, so a long wait costs about
# one request a second, well inside the default rate limit (100 a minute).
FIRST_PAUSE = 0.1
LAST_PAUSE = 1.0
PAUSE_GROWTH = 1.5


class Client:
    """A connection to one taskgate deployment, as one principal (the token's).

    `url` defaults to $TASKGATE_URL (else http://localhost:8787), `token` to $TASKGATE_TOKEN;
    `timeout` is the per-request timeout in seconds. `transport` replaces the HTTP transport
    (httpx's), for tests or proxies. Close it, or use it as a context manager.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = Connection(url, token, timeout=timeout, transport=transport)
        self.url = self._http.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- tasks ---------------------------------------------------------------------------

    @overload
    def create_task(
        self,
        type: str,
        payload: Mapping[str, Any],
        priority: int = ...,
        *,
        capabilities: Sequence[str] | None = ...,
        async_: Literal[True] = ...,
        timeout: int | None = ...,
        webhook: str | None = ...,
        idempotency_key: str | None = ...,
    ) -> TaskCreated: ...

    @overload
    def create_task(
        self,
        type: str,
        payload: Mapping[str, Any],
        priority: int = ...,
        *,
        capabilities: Sequence[str] | None = ...,
        async_: Literal[False],
        timeout: int | None = ...,
        webhook: str | None = ...,
        idempotency_key: str | None = ...,
    ) -> Task: ...

    @overload
    def create_task(
        self,
        type: str,
        payload: Mapping[str, Any],
        priority: int = ...,
        *,
        capabilities: Sequence[str] | None = ...,
        async_: bool,
        timeout: int | None = ...,
        webhook: str | None = ...,
        idempotency_key: str | None = ...,
    ) -> TaskCreated | Task: ...

    def create_task(
        self,
        type: str,
        payload: Mapping[str, Any],
        priority: int = 1,
        *,
        capabilities: Sequence[str] | None = None,
        async_: bool = True,
        timeout: int | None = None,
        webhook: str | None = None,
        idempotency_key: str | None = None,
    ) -> TaskCreated | Task:
        """Submit a task (`priority` 0-10, higher first; `timeout` its execution timeout in ms).

        With `async_=True` the reply is the queued task's id and status. With `async_=False`
        the gateway waits up to 25 s and returns the finished task, or the task as it stands
        then. `idempotency_key` is sent as the `Idempotency-Key` header: the same key and body
        within 24 h return the first task instead of creating another.
        """
        body: dict[str, Any] = {"type": type, "priority": priority, "payload": payload, "async": async_}
        optional = {"capabilities": capabilities, "timeout": timeout, "webhook": webhook}
        body.update({name: value for name, value in optional.items() if value is not None})
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        if async_:
            return self._http.call("POST", "/api/task", TaskCreated, body=body, headers=headers)
        return self._http.call(
            "POST", "/api/task", Task, body=body, headers=headers, timeout=SYNC_CREATE_TIMEOUT
        )

    def get_task(self, task_id: str) -> Task:
        return self._http.call("GET", f"/api/task/{segment(task_id)}", Task)

    def cancel_task(self, task_id: str) -> TaskAction:
        """Cancel a PENDING or PROCESSING task; a finished one is a `Conflict`."""
        return self._http.call("POST", f"/api/task/{segment(task_id)}/cancel", TaskAction)

    def retry_task(self, task_id: str) -> TaskAction:
        """Queue a FAILED, TIMEOUT or CANCELLED task again; any other status is a `Conflict`."""
        return self._http.call("POST", f"/api/task/{segment(task_id)}/retry", TaskAction)

    def wait(
        self,
        task_id: str,
        timeout: float | None = 300.0,
        on_progress: Callable[[Task], object] | None = None,
    ) -> Task:
        """Poll the task until it is finished (COMPLETED, FAILED, TIMEOUT or CANCELLED) and
        return it; a failed task is returned, not raised. `on_progress(task)` is called with
        the first reading and whenever the status or progress changes. After `timeout`
        seconds (None: no limit) it raises `WaitTimeout`. A rate-limited poll waits out the
        limit's Retry-After when that fits in the time left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = FIRST_PAUSE
        seen: tuple[str, int] | None = None
        while True:
            try:
                task = self.get_task(task_id)
            except RateLimited as exc:
                left = None if deadline is None else deadline - time.monotonic()
                wait_s = exc.retry_after if exc.retry_after is not None else LAST_PAUSE
                if left is not None and wait_s > left:
                    raise
                time.sleep(wait_s)
                continue
            if (task.status, task.progress) != seen:
                seen = (task.status, task.progress)
                if on_progress is not None:
                    on_progress(task)
            if task.is_finished:
                return task
            sleep_s = pause
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    assert timeout is not None
                    raise WaitTimeout(task, timeout)
                sleep_s = min(pause, left)
            time.sleep(sleep_s)
            pause = min(pause * PAUSE_GROWTH, LAST_PAUSE)

    # -- servers (admin, except a server's own heartbeat) ---------------------------------

    def register_server(
        self,
        name: str,
        endpoints: Mapping[str, str],
        *,
        id: str | None = None,
        api_key: str | None = None,
        max_concurrent: int | None = None,
        capabilities: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
        priority: int | None = None,
    ) -> ServerRegistered:
        """Register a backend. `endpoints` needs `predict` and `health` (`metrics`, `cancel`
        optional). Left out, `id` is chosen by the gateway and the rest take the gateway's
        defaults (max_concurrent 10, priority 1). The reply's `token` is the server's own
        service token, for its heartbeats."""
        body: dict[str, Any] = {"name": name, "endpoints": dict(endpoints)}
        optional = {
            "id": id,
            "apiKey": api_key,
            "maxConcurrent": max_concurrent,
            "capabilities": capabilities,
            "groups": groups,
            "priority": priority,
        }
        body.update({field: value for field, value in optional.items() if value is not None})
        return self._http.call("POST", "/api/servers", ServerRegistered, body=body)

    def list_servers(self, *, status: str | None = None, group: str | None = None) -> list[Server]:
        """Every registered server, or those with this status (online, degraded, offline,
        maintenance) and/or in this group."""
        params = {name: value for name, value in (("status", status), ("group", group)) if value is not None}
        return self._http.call("GET", "/api/servers", ServerList, params=params).servers

    def get_server_metrics(self, server_id: str) -> ServerMetrics:
        return self._http.call("GET", f"/api/servers/{segment(server_id)}/metrics", ServerMetrics)

    def heartbeat(
        self,
        server_id: str,
        *,
        status: Literal["healthy", "unhealthy"] = "healthy",
        active_tasks: int | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> HeartbeatReply:
        """Report the server's health (as that server, with its service token, or as admin)."""
        body: dict[str, Any] = {"status": status}
        if active_tasks is not None:
            body["activeTasks"] = active_tasks
        if metrics is not None:
            body["metrics"] = dict(metrics)
        return self._http.call(
            "POST", f"/api/servers/{segment(server_id)}/heartbeat", HeartbeatReply, body=body
        )

    def unregister_server(self, server_id: str) -> ServerUnregistered:
        """Remove the server; its PROCESSING tasks go back to the queue."""
        return self._http.call("DELETE", f"/api/servers/{segment(server_id)}", ServerUnregistered)

    def set_maintenance(
        self, server_id: str, maintenance: bool = True, *, reason: str | None = None
    ) -> MaintenanceReply:
        """Enable (or with `maintenance=False` disable) maintenance: no new tasks go to it."""
        body: dict[str, Any] = {"maintenance": maintenance}
        if reason is not None:
            body["reason"] = reason
        path = f"/api/servers/{segment(server_id)}/maintenance"
        return self._http.call("POST", path, MaintenanceReply, body=body)

    # -- statistics and load balancing ----------------------------------------------------

    def task_stats(self, date: Day | None = None) -> TaskStats:
        """That UTC day's counts (default today); `pending_tasks` is the backlog now."""
        return self._http.call("GET", "/api/stats/tasks", TaskStats, params=day_query(date))

    def hourly_report(self, date: Day | None = None) -> HourlyReport:
        return self._http.call("GET", "/api/stats/hourly", HourlyReport, params=day_query(date))

    def server_stats(self, server_id: str, date: Day | None = None) -> ServerStats:
        return self._http.call(
            "GET", f"/api/stats/servers/{segment(server_id)}", ServerStats, params=day_query(date)
        )

    def load_balancer(self) -> LoadBalancerStatus:
        return self._http.call("GET", "/api/stats/load-balancer", LoadBalancerStatus)

    def set_algorithm(self, algorithm: str) -> AlgorithmSet:
        """round-robin, least-connections, weighted-round-robin, random, response-time or p2c."""
        body = {"algorithm": algorithm}
        return self._http.call("POST", "/api/stats/load-balancer/algorithm", AlgorithmSet, body=body)

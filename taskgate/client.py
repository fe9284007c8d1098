"""A synchronous client of taskgate's HTTP API.

    from taskgate.client import Client

    with Client("http://localhost:8787", token) as client:
        created = client.create_task("video-processing", {"video_url": "https://..."})
        task = client.wait(created.id, on_progress=lambda t: print(t.status, t.progress))

One httpx connection pool per client; every call returns a typed value (`taskgate.models`)
or raises a `taskgate.errors.TaskgateError` subclass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, overload

import httpx

from taskgate import _api
from taskgate._following import Following
from taskgate._http import Connection, Day
from taskgate._waiting import FIRST_PAUSE, LAST_PAUSE
from taskgate.models import (
    AlgorithmSet,
    HeartbeatReply,
    HourlyReport,
    LoadBalancerStatus,
    MaintenanceReply,
    OutputAccepted,
    Overview,
    QueueSummary,
    Server,
    ServerMetrics,
    ServerRegistered,
    ServerStats,
    ServerToken,
    ServerUnregistered,
    Task,
    TaskAction,
    TaskCreated,
    TaskPage,
    TaskStats,
    TaskSummary,
    WebhookDeliveries,
)

__all__ = ["FIRST_PAUSE", "LAST_PAUSE", "Client"]


class Client(Following):
    """A connection to one taskgate deployment, as one principal (the token's).

    `url` defaults to $TASKGATE_URL (else http://localhost:8787), `token` to $TASKGATE_TOKEN;
    `timeout` is the per-request timeout in seconds. `transport` replaces the HTTP transport
    (httpx's), for tests or proxies. Close it, or use it as a context manager.
    `taskgate.async_client.AsyncClient` has the same methods, as coroutines.
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
        wait: None = ...,
    ) -> TaskCreated: ...

    @overload
    def create_task(
        self,
        type: str,
        payload: Mapping[str, Any],
        priority: int = ...,
        *,
        capabilities: Sequence[str] | None = ...,
        async_: bool = ...,
        timeout: int | None = ...,
        webhook: str | None = ...,
        idempotency_key: str | None = ...,
        wait: float,
    ) -> Task: ...

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
        wait: float | None = ...,
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
        wait: float | None = ...,
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
        wait: float | None = None,
    ) -> TaskCreated | Task:
        """Submit a task (`priority` 0-10, higher first; `timeout` its execution timeout in ms).

        With `async_=True` the reply is the queued task's id and status. With `async_=False`
        the gateway waits (25 s by default) and returns the finished task, or the task as it
        stands then. `wait=N` (1-60 s) sends `Prefer: wait=N`: the gateway answers when the
        task ends or after N s (capped by the deployment), with the task as it stands.
        `idempotency_key` is sent as the `Idempotency-Key` header: the same key and body
        within 24 h return the first task instead of creating another.
        """
        return self._http.send(
            _api.create_task(
                type,
                payload,
                priority,
                capabilities=capabilities,
                async_=async_,
                timeout=timeout,
                webhook=webhook,
                idempotency_key=idempotency_key,
                wait=wait,
            )
        )

    def get_task(self, task_id: str) -> Task:
        return self._http.send(_api.get_task(task_id))

    def get_task_json(self, task_id: str) -> dict[str, Any]:
        """The task exactly as the gateway sent it: every field, also those of a newer
        gateway that this client's `Task` does not know."""
        return self._http.send(_api.get_task_json(task_id))

    def list_tasks(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> TaskPage:
        """One page of tasks, newest first (a user's own; an admin's: everyone's), of this
        status if given; `limit` 1-200 (default 50); `cursor` is a page's `next_cursor`."""
        return self._http.send(_api.list_tasks(status, limit, cursor))

    def iter_tasks(self, *, status: str | None = None, page_size: int | None = None) -> Iterator[TaskSummary]:
        """Every task, newest first, fetching page after page as it is iterated."""
        cursor: str | None = None
        while True:
            page = self.list_tasks(status=status, limit=page_size, cursor=cursor)
            yield from page.tasks
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel_task(self, task_id: str) -> TaskAction:
        """Cancel a PENDING or PROCESSING task; a finished one is a `Conflict`."""
        return self._http.send(_api.cancel_task(task_id))

    def retry_task(self, task_id: str) -> TaskAction:
        """Queue a FAILED, TIMEOUT or CANCELLED task again; any other status is a `Conflict`."""
        return self._http.send(_api.retry_task(task_id))

    def webhook_deliveries(self, task_id: str) -> WebhookDeliveries:
        """The task's webhook deliveries, each with its attempts (owner or admin)."""
        return self._http.send(_api.webhook_deliveries(task_id))

    def update_task(
        self,
        task_id: str,
        *,
        status: Literal["PROCESSING", "COMPLETED", "FAILED"] | None = None,
        progress: int | None = None,
        result: Any = None,
        error: Any = None,
        message: str | None = None,
    ) -> Task:
        """A backend's report on its task (PUT, with the task's callback token); backends
        written with `taskgate.backend` make it for you."""
        return self._http.send(
            _api.update_task(
                task_id, status=status, progress=progress, result=result, error=error, message=message
            )
        )

    def append_output(self, task_id: str, data: Any) -> OutputAccepted:
        """A backend appends a chunk (any JSON value) to its running task's streamed output."""
        return self._http.send(_api.append_output(task_id, data))

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
        return self._http.send(
            _api.register_server(
                name,
                endpoints,
                id=id,
                api_key=api_key,
                max_concurrent=max_concurrent,
                capabilities=capabilities,
                groups=groups,
                priority=priority,
            )
        )

    def list_servers(self, *, status: str | None = None, group: str | None = None) -> list[Server]:
        """Every registered server, or those with this status (online, degraded, offline,
        maintenance) and/or in this group."""
        return self._http.send(_api.list_servers(status, group)).servers

    def get_server_metrics(self, server_id: str) -> ServerMetrics:
        return self._http.send(_api.server_metrics(server_id))

    def heartbeat(
        self,
        server_id: str,
        *,
        status: Literal["healthy", "unhealthy"] = "healthy",
        active_tasks: int | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> HeartbeatReply:
        """Report the server's health (as that server, with its service token, or as admin)."""
        return self._http.send(_api.heartbeat(server_id, status, active_tasks, metrics))

    def unregister_server(self, server_id: str) -> ServerUnregistered:
        """Remove the server; its PROCESSING tasks go back to the queue."""
        return self._http.send(_api.unregister_server(server_id))

    def set_maintenance(
        self, server_id: str, maintenance: bool = True, *, reason: str | None = None
    ) -> MaintenanceReply:
        """Enable (or with `maintenance=False` disable) maintenance: no new tasks go to it."""
        return self._http.send(_api.set_maintenance(server_id, maintenance, reason))

    def rotate_server_token(self, server_id: str) -> ServerToken:
        """A new service token for the server (`POST /api/servers/:id/token`); the old one ends."""
        return self._http.send(_api.rotate_server_token(server_id))

    # -- statistics and load balancing ----------------------------------------------------

    def task_stats(self, date: Day | None = None) -> TaskStats:
        """That UTC day's counts (default today); `pending_tasks` is the backlog now."""
        return self._http.send(_api.task_stats(date))

    def hourly_report(self, date: Day | None = None) -> HourlyReport:
        return self._http.send(_api.hourly_report(date))

    def server_stats(self, server_id: str, date: Day | None = None) -> ServerStats:
        return self._http.send(_api.server_stats(server_id, date))

    def queue_stats(self) -> QueueSummary:
        """The queue now: backlog (per priority), tasks in flight, slots online."""
        return self._http.send(_api.queue_stats())

    def overview(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        days: int | None = None,
        end: Day | None = None,
    ) -> Overview:
        """What the dashboard shows, in one request: the queue, a page of tasks, the servers
        (admins), statistics over `days` days (1-31) ending with `end` (UTC; default today),
        and the load distribution."""
        return self._http.send(_api.overview(status, limit, days, end))

    def load_balancer(self) -> LoadBalancerStatus:
        return self._http.send(_api.load_balancer())

    def set_algorithm(self, algorithm: str) -> AlgorithmSet:
        """round-robin, least-connections, weighted-round-robin, random, response-time or p2c."""
        return self._http.send(_api.set_algorithm(algorithm))

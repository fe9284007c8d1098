"""The asynchronous client: `Client`'s methods as coroutines, over httpx.AsyncClient.

    from taskgate.async_client import AsyncClient

    async with AsyncClient("http://localhost:8787", token) as client:
        created = await client.create_task("demo", {"prompt": "hello"})
        async for chunk in client.output(created.id):
            print(chunk)

Each call sends the same request and decodes the same reply as `Client`'s (taskgate/_api.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import httpx

from taskgate import _api
from taskgate._http import AsyncConnection, Day
from taskgate._waiting import STREAM_BROKEN, Polling, Reading, deliver
from taskgate.errors import RateLimited
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
from taskgate.streaming import OutputEvent, TaskEvent

__all__ = ["AsyncClient"]


class AsyncClient:
    """A connection to one taskgate deployment, as one principal; see `Client` for each
    method. Close it (`await client.close()`), or use it as an async context manager."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = AsyncConnection(url, token, timeout=timeout, transport=transport)
        self.url = self._http.url

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- tasks ---------------------------------------------------------------------------

    async def create_task(
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
        """A `TaskCreated` when `async_` and no `wait`; otherwise the `Task` as it stands."""
        return await self._http.send(
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

    async def get_task(self, task_id: str) -> Task:
        return await self._http.send(_api.get_task(task_id))

    async def get_task_json(self, task_id: str) -> dict[str, Any]:
        """The task exactly as the gateway sent it: every field, also those of a newer
        gateway that this client's `Task` does not know."""
        return await self._http.send(_api.get_task_json(task_id))

    async def list_tasks(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> TaskPage:
        return await self._http.send(_api.list_tasks(status, limit, cursor))

    async def iter_tasks(
        self, *, status: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[TaskSummary]:
        cursor: str | None = None
        while True:
            page = await self.list_tasks(status=status, limit=page_size, cursor=cursor)
            for task in page.tasks:
                yield task
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel_task(self, task_id: str) -> TaskAction:
        return await self._http.send(_api.cancel_task(task_id))

    async def retry_task(self, task_id: str) -> TaskAction:
        return await self._http.send(_api.retry_task(task_id))

    async def webhook_deliveries(self, task_id: str) -> WebhookDeliveries:
        return await self._http.send(_api.webhook_deliveries(task_id))

    async def update_task(
        self,
        task_id: str,
        *,
        status: Literal["PROCESSING", "COMPLETED", "FAILED"] | None = None,
        progress: int | None = None,
        result: Any = None,
        error: Any = None,
        message: str | None = None,
    ) -> Task:
        return await self._http.send(
            _api.update_task(
                task_id, status=status, progress=progress, result=result, error=error, message=message
            )
        )

    async def append_output(self, task_id: str, data: Any) -> OutputAccepted:
        return await self._http.send(_api.append_output(task_id, data))

    async def wait(
        self,
        task_id: str,
        timeout: float | None = 300.0,
        on_progress: Callable[[Task], object] | None = None,
    ) -> Task:
        polling = Polling(timeout, on_progress)
        while True:
            try:
                task = await self.get_task(task_id)
            except RateLimited as exc:
                await asyncio.sleep(polling.rate_limited(exc))
                continue
            pause = polling.read(task)
            if pause is None:
                return task
            await asyncio.sleep(pause)

    async def stream(
        self, task_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> AsyncIterator[TaskEvent]:
        reading = Reading(task_id, last_event_id, timeout)
        while True:
            try:
                async with self._http.stream(*reading.request()) as lines:
                    try:
                        async for line in lines:
                            for event in reading.feed(line):
                                yield event
                            if reading.done:
                                return
                    except STREAM_BROKEN:
                        pass  # read again from the last event
            except RateLimited as exc:
                await asyncio.sleep(reading.rate_limited(exc))
                continue
            await asyncio.sleep(reading.reconnect_s)
            if reading.up():
                raise reading.timed_out(await self.get_task(task_id))

    async def output(self, task_id: str, *, timeout: float | None = None) -> AsyncIterator[Any]:
        async for event in self.stream(task_id, timeout=timeout):
            if isinstance(event, OutputEvent):
                yield event.data

    async def follow(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[Task], object] | None = None,
        on_output: Callable[[OutputEvent], object] | None = None,
    ) -> Task:
        async for event in self.stream(task_id, timeout=timeout):
            finished = deliver(event, on_progress, on_output)
            if finished is not None:
                return finished
        raise AssertionError("a stream ends with its done event")  # pragma: no cover

    # -- servers -------------------------------------------------------------------------

    async def register_server(
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
        return await self._http.send(
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

    async def list_servers(self, *, status: str | None = None, group: str | None = None) -> list[Server]:
        return (await self._http.send(_api.list_servers(status, group))).servers

    async def get_server_metrics(self, server_id: str) -> ServerMetrics:
        return await self._http.send(_api.server_metrics(server_id))

    async def heartbeat(
        self,
        server_id: str,
        *,
        status: Literal["healthy", "unhealthy"] = "healthy",
        active_tasks: int | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> HeartbeatReply:
        return await self._http.send(_api.heartbeat(server_id, status, active_tasks, metrics))

    async def unregister_server(self, server_id: str) -> ServerUnregistered:
        return await self._http.send(_api.unregister_server(server_id))

    async def set_maintenance(
        self, server_id: str, maintenance: bool = True, *, reason: str | None = None
    ) -> MaintenanceReply:
        return await self._http.send(_api.set_maintenance(server_id, maintenance, reason))

    async def rotate_server_token(self, server_id: str) -> ServerToken:
        return await self._http.send(_api.rotate_server_token(server_id))

    # -- statistics and load balancing ----------------------------------------------------

    async def task_stats(self, date: Day | None = None) -> TaskStats:
        return await self._http.send(_api.task_stats(date))

    async def hourly_report(self, date: Day | None = None) -> HourlyReport:
        return await self._http.send(_api.hourly_report(date))

    async def server_stats(self, server_id: str, date: Day | None = None) -> ServerStats:
        return await self._http.send(_api.server_stats(server_id, date))

    async def queue_stats(self) -> QueueSummary:
        return await self._http.send(_api.queue_stats())

    async def overview(
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
        return await self._http.send(_api.overview(status, limit, days, end))

    async def load_balancer(self) -> LoadBalancerStatus:
        return await self._http.send(_api.load_balancer())

    async def set_algorithm(self, algorithm: str) -> AlgorithmSet:
        return await self._http.send(_api.set_algorithm(algorithm))

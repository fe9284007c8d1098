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
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import httpx

from taskgate import _api
from taskgate._http import AsyncConnection, Day
from taskgate._waiting import FIRST_PAUSE, STREAM_BROKEN, next_pause, rate_limit_pause
from taskgate.errors import RateLimited, WaitTimeout
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
from taskgate.streaming import (
    READ_TIMEOUT_S,
    DoneEvent,
    OutputEvent,
    ServerSentEvent,
    SseDecoder,
    StreamState,
    TaskEvent,
)

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
        call = _api.create_task(
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
        created: TaskCreated | Task = await self._http.send(call)
        return created

    async def get_task(self, task_id: str) -> Task:
        task: Task = await self._http.send(_api.get_task(task_id))
        return task

    async def get_task_json(self, task_id: str) -> dict[str, Any]:
        """The task exactly as the gateway sent it: every field, also those of a newer
        gateway that this client's `Task` does not know."""
        body: dict[str, Any] = await self._http.send(_api.get_task(task_id, as_sent=True))
        return body

    async def list_tasks(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> TaskPage:
        page: TaskPage = await self._http.send(_api.list_tasks(status, limit, cursor))
        return page

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
        reply: TaskAction = await self._http.send(_api.cancel_task(task_id))
        return reply

    async def retry_task(self, task_id: str) -> TaskAction:
        reply: TaskAction = await self._http.send(_api.retry_task(task_id))
        return reply

    async def webhook_deliveries(self, task_id: str) -> WebhookDeliveries:
        reply: WebhookDeliveries = await self._http.send(_api.webhook_deliveries(task_id))
        return reply

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
        call = _api.update_task(
            task_id, status=status, progress=progress, result=result, error=error, message=message
        )
        task: Task = await self._http.send(call)
        return task

    async def append_output(self, task_id: str, data: Any) -> OutputAccepted:
        reply: OutputAccepted = await self._http.send(_api.append_output(task_id, data))
        return reply

    async def wait(
        self,
        task_id: str,
        timeout: float | None = 300.0,
        on_progress: Callable[[Task], object] | None = None,
    ) -> Task:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = FIRST_PAUSE
        seen: tuple[str, int] | None = None
        while True:
            try:
                task = await self.get_task(task_id)
            except RateLimited as exc:
                await asyncio.sleep(rate_limit_pause(exc, deadline))
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
            await asyncio.sleep(sleep_s)
            pause = next_pause(pause)

    async def stream(
        self, task_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> AsyncIterator[TaskEvent]:
        state = StreamState(task_id, last_event_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        path = _api.stream_path(task_id)
        while True:
            left = READ_TIMEOUT_S if deadline is None else deadline - time.monotonic()
            try:
                async with self._http.stream(
                    path, state.headers(), max(0.1, min(READ_TIMEOUT_S, left))
                ) as lines:
                    try:
                        async for line_event in _events(lines):
                            event = state.read(line_event)
                            if event is not None:
                                yield event
                            if state.done:
                                return
                    except STREAM_BROKEN:
                        pass  # read again from the last event
            except RateLimited as exc:
                await asyncio.sleep(rate_limit_pause(exc, deadline))
                continue
            await asyncio.sleep(state.reconnect_s)
            if deadline is not None and time.monotonic() >= deadline:
                assert timeout is not None
                raise WaitTimeout(await self.get_task(task_id), timeout)

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
            if isinstance(event, OutputEvent):
                if on_output is not None:
                    on_output(event)
            elif on_progress is not None:
                on_progress(event.task)
            if isinstance(event, DoneEvent):
                return event.task
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
        call = _api.register_server(
            name,
            endpoints,
            id=id,
            api_key=api_key,
            max_concurrent=max_concurrent,
            capabilities=capabilities,
            groups=groups,
            priority=priority,
        )
        reply: ServerRegistered = await self._http.send(call)
        return reply

    async def list_servers(self, *, status: str | None = None, group: str | None = None) -> list[Server]:
        servers: list[Server] = (await self._http.send(_api.list_servers(status, group))).servers
        return servers

    async def get_server_metrics(self, server_id: str) -> ServerMetrics:
        reply: ServerMetrics = await self._http.send(_api.server_metrics(server_id))
        return reply

    async def heartbeat(
        self,
        server_id: str,
        *,
        status: Literal["healthy", "unhealthy"] = "healthy",
        active_tasks: int | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> HeartbeatReply:
        reply: HeartbeatReply = await self._http.send(
            _api.heartbeat(server_id, status, active_tasks, metrics)
        )
        return reply

    async def unregister_server(self, server_id: str) -> ServerUnregistered:
        reply: ServerUnregistered = await self._http.send(_api.unregister_server(server_id))
        return reply

    async def set_maintenance(
        self, server_id: str, maintenance: bool = True, *, reason: str | None = None
    ) -> MaintenanceReply:
        reply: MaintenanceReply = await self._http.send(_api.set_maintenance(server_id, maintenance, reason))
        return reply

    async def rotate_server_token(self, server_id: str) -> ServerToken:
        reply: ServerToken = await self._http.send(_api.rotate_server_token(server_id))
        return reply

    # -- statistics and load balancing ----------------------------------------------------

    async def task_stats(self, date: Day | None = None) -> TaskStats:
        reply: TaskStats = await self._http.send(_api.task_stats(date))
        return reply

    async def hourly_report(self, date: Day | None = None) -> HourlyReport:
        reply: HourlyReport = await self._http.send(_api.hourly_report(date))
        return reply

    async def server_stats(self, server_id: str, date: Day | None = None) -> ServerStats:
        reply: ServerStats = await self._http.send(_api.server_stats(server_id, date))
        return reply

    async def queue_stats(self) -> QueueSummary:
        reply: QueueSummary = await self._http.send(_api.queue_stats())
        return reply

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
        reply: Overview = await self._http.send(_api.overview(status, limit, days, end))
        return reply

    async def load_balancer(self) -> LoadBalancerStatus:
        reply: LoadBalancerStatus = await self._http.send(_api.load_balancer())
        return reply

    async def set_algorithm(self, algorithm: str) -> AlgorithmSet:
        reply: AlgorithmSet = await self._http.send(_api.set_algorithm(algorithm))
        return reply


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    decoder = SseDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event

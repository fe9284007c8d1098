"""Every route of the API as a `Call`: the request a client method makes and the type its reply
decodes to. `Client` and `AsyncClient` send the same calls, each over its own transport, so
the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from taskgate._http import Day, day_query, segment
from taskgate.models import (
    AlgorithmSet,
    HeartbeatReply,
    HourlyReport,
    LoadBalancerStatus,
    MaintenanceReply,
    OutputAccepted,
    Overview,
    QueueSummary,
    ServerList,
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
    WebhookDeliveries,
)

# `async_=False` makes the gateway hold the request up to its wait (25 s by default).
SYNC_CREATE_TIMEOUT = 40.0
# `Prefer: wait=N`: the HTTP timeout is the wait plus this margin.
WAIT_MARGIN_S = 15.0
MAX_WAIT_S = 60


# What a call's reply decodes to; covariant, so that `Call[Task]` is a `Call[TaskCreated | Task]`.
R = TypeVar("R", covariant=True)


@dataclass(frozen=True)
class Call(Generic[R]):
    method: str
    path: str
    reply: type[R]
    body: Mapping[str, Any] | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None  # None: the client's


def _present(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


# -- tasks -------------------------------------------------------------------------------


def create_task(
    type: str,
    payload: Mapping[str, Any],
    priority: int,
    *,
    capabilities: Sequence[str] | None,
    async_: bool,
    timeout: int | None,
    webhook: str | None,
    idempotency_key: str | None,
    wait: float | None,
) -> Call[TaskCreated | Task]:
    body: dict[str, Any] = {"type": type, "priority": priority, "payload": payload, "async": async_}
    body.update(_present(capabilities=capabilities, timeout=timeout, webhook=webhook))
    headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
    if wait is not None:
        if not 1 <= wait <= MAX_WAIT_S:
            raise ValueError(f"wait must be from 1 to {MAX_WAIT_S} seconds")
        headers["Prefer"] = f"wait={int(wait)}"
        return Call("POST", "/api/task", Task, body, headers=headers, timeout=int(wait) + WAIT_MARGIN_S)
    if async_:
        return Call("POST", "/api/task", TaskCreated, body, headers=headers)
    return Call("POST", "/api/task", Task, body, headers=headers, timeout=SYNC_CREATE_TIMEOUT)


def get_task(task_id: str) -> Call[Task]:
    return Call("GET", f"/api/task/{segment(task_id)}", Task)


def get_task_json(task_id: str) -> Call[dict[str, Any]]:
    """The task as sent: every field, also those a newer gateway adds."""
    return Call("GET", f"/api/task/{segment(task_id)}", dict)


def list_tasks(status: str | None, limit: int | None, cursor: str | None) -> Call[TaskPage]:
    params = _present(status=status, limit=None if limit is None else str(limit), cursor=cursor)
    return Call("GET", "/api/tasks", TaskPage, params=params)


def cancel_task(task_id: str) -> Call[TaskAction]:
    return Call("POST", f"/api/task/{segment(task_id)}/cancel", TaskAction)


def retry_task(task_id: str) -> Call[TaskAction]:
    return Call("POST", f"/api/task/{segment(task_id)}/retry", TaskAction)


def webhook_deliveries(task_id: str) -> Call[WebhookDeliveries]:
    return Call("GET", f"/api/task/{segment(task_id)}/webhooks", WebhookDeliveries)


def update_task(
    task_id: str,
    *,
    status: Literal["PROCESSING", "COMPLETED", "FAILED"] | None,
    progress: int | None,
    result: Any,
    error: Any,
    message: str | None,
) -> Call[Task]:
    body = _present(status=status, progress=progress, result=result, error=error, message=message)
    return Call("PUT", f"/api/task/{segment(task_id)}", Task, body)


def append_output(task_id: str, data: Any) -> Call[OutputAccepted]:
    return Call("POST", f"/api/task/{segment(task_id)}/output", OutputAccepted, {"data": data})


def stream_path(task_id: str) -> str:
    return f"/api/task/{segment(task_id)}/stream"


# -- servers -----------------------------------------------------------------------------


def register_server(
    name: str,
    endpoints: Mapping[str, str],
    *,
    id: str | None,
    api_key: str | None,
    max_concurrent: int | None,
    capabilities: Sequence[str] | None,
    groups: Sequence[str] | None,
    priority: int | None,
) -> Call[ServerRegistered]:
    body: dict[str, Any] = {"name": name, "endpoints": dict(endpoints)}
    body.update(
        _present(
            id=id,
            apiKey=api_key,
            maxConcurrent=max_concurrent,
            capabilities=capabilities,
            groups=groups,
            priority=priority,
        )
    )
    return Call("POST", "/api/servers", ServerRegistered, body)


def list_servers(status: str | None, group: str | None) -> Call[ServerList]:
    return Call("GET", "/api/servers", ServerList, params=_present(status=status, group=group))


def server_metrics(server_id: str) -> Call[ServerMetrics]:
    return Call("GET", f"/api/servers/{segment(server_id)}/metrics", ServerMetrics)


def heartbeat(
    server_id: str, status: str, active_tasks: int | None, metrics: Mapping[str, Any] | None
) -> Call[HeartbeatReply]:
    body: dict[str, Any] = {"status": status}
    body.update(_present(activeTasks=active_tasks, metrics=None if metrics is None else dict(metrics)))
    return Call("POST", f"/api/servers/{segment(server_id)}/heartbeat", HeartbeatReply, body)


def unregister_server(server_id: str) -> Call[ServerUnregistered]:
    return Call("DELETE", f"/api/servers/{segment(server_id)}", ServerUnregistered)


def set_maintenance(server_id: str, maintenance: bool, reason: str | None) -> Call[MaintenanceReply]:
    body: dict[str, Any] = {"maintenance": maintenance, **_present(reason=reason)}
    return Call("POST", f"/api/servers/{segment(server_id)}/maintenance", MaintenanceReply, body)


def rotate_server_token(server_id: str) -> Call[ServerToken]:
    return Call("POST", f"/api/servers/{segment(server_id)}/token", ServerToken)


# -- statistics and load balancing -------------------------------------------------------


def task_stats(date: Day | None) -> Call[TaskStats]:
    return Call("GET", "/api/stats/tasks", TaskStats, params=day_query(date))


def hourly_report(date: Day | None) -> Call[HourlyReport]:
    return Call("GET", "/api/stats/hourly", HourlyReport, params=day_query(date))


def server_stats(server_id: str, date: Day | None) -> Call[ServerStats]:
    return Call("GET", f"/api/stats/servers/{segment(server_id)}", ServerStats, params=day_query(date))


def queue_stats() -> Call[QueueSummary]:
    return Call("GET", "/api/stats/queue", QueueSummary)


def overview(status: str | None, limit: int | None, days: int | None, end: Day | None) -> Call[Overview]:
    params = _present(
        status=status,
        limit=None if limit is None else str(limit),
        days=None if days is None else str(days),
        **day_query(end, name="end"),
    )
    return Call("GET", "/api/overview", Overview, params=params)


def load_balancer() -> Call[LoadBalancerStatus]:
    return Call("GET", "/api/stats/load-balancer", LoadBalancerStatus)


def set_algorithm(algorithm: str) -> Call[AlgorithmSet]:
    return Call("POST", "/api/stats/load-balancer/algorithm", AlgorithmSet, {"algorithm": algorithm})

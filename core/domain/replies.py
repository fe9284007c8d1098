"""Response bodies: what each route returns, as the OpenAPI document describes it.

Handlers build these bodies as dicts; the unit tests decode real replies with these types, so a
field added to a reply without its description here fails a test.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from core.domain.models import ServerStatus, TaskStatus

Ms = Annotated[int, msgspec.Meta(description="Epoch milliseconds")]
Duration = Annotated[int, msgspec.Meta(description="Milliseconds")]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
# A calendar date as the server reads it (years 0001-9999, leap days included): the document
# promises exactly the dates that are accepted.
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
ISO_DATE = (
    rf"^(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    rf"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)$"
)


class Reply(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="camel"):
    """Base of every response body: camelCase names, and no field that is not listed."""


class ErrorBody(Reply):
    """Every error reply."""

    error: str
    details: str


class TaskCreated(Reply):
    """A task accepted for processing (`async` true)."""

    id: str
    status: TaskStatus
    created_at: Ms
    updated_at: Ms


Capabilities = Annotated[list[str], msgspec.Meta(description="What a server must offer to take the task")]


class AttemptView(Reply):
    """One time the task was sent to a backend."""

    attempt: int
    server_id: str
    started_at: Ms
    ended_at: Ms | None
    outcome: (
        Annotated[
            Literal["completed", "failed", "timeout", "cancelled"],
            msgspec.Meta(description="null while the attempt runs"),
        ]
        | None
    )
    error: Annotated[Any, msgspec.Meta(description="Why it ended, naming the server; never a URL")]


class QueueInfo(Reply):
    """Why a PENDING task waits (docs/SCHEDULING.md)."""

    reason: Literal["no_capable_server", "no_server_online", "capacity_full", "backoff", "dispatching"]
    details: Annotated[str, msgspec.Meta(description="The missing capabilities, the servers and their state")]
    position: Annotated[int, msgspec.Meta(ge=1, description="1-based place among the tasks ahead of it")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    estimated_start_at: Annotated[int, msgspec.Meta(description="Epoch ms, when it can be estimated")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET


class TaskView(Reply):
    """A task as it stands."""

    id: str
    type: str
    priority: int
    payload: Annotated[dict[str, Any], msgspec.Meta(description="As submitted")]
    status: TaskStatus
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)]
    server_id: str | None
    result: Any
    error: Any
    attempts: Annotated[int, msgspec.Meta(description="Times the task was sent to a backend")]
    created_at: Ms
    updated_at: Ms
    capabilities: Capabilities
    history: Annotated[list[AttemptView], msgspec.Meta(description="One entry per attempt, oldest first")]
    started_at: Ms | msgspec.UnsetType = msgspec.UNSET
    completed_at: Ms | msgspec.UnsetType = msgspec.UNSET
    message: str | msgspec.UnsetType = msgspec.UNSET
    queue: Annotated[QueueInfo, msgspec.Meta(description="While PENDING: why it waits")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET


class WebhookAttemptView(Reply):
    """One POST to the webhook."""

    at: Ms
    duration_ms: Duration
    status_code: Annotated[int, msgspec.Meta(description="The receiver's HTTP status")] | None
    error: Annotated[str, msgspec.Meta(description="Why no status: connection error, timeout")] | None
    next_retry_at: Annotated[int, msgspec.Meta(description="Epoch ms of the retry, if one follows")] | None


class WebhookDeliveryView(Reply):
    """The finished task's delivery to its webhook (one per time the task finished)."""

    id: str
    url: str
    task_status: TaskStatus
    state: Literal["pending", "delivered", "failed"]
    created_at: Ms
    updated_at: Ms
    next_attempt_at: Annotated[int, msgspec.Meta(description="Epoch ms; while pending")] | None
    attempts: list[WebhookAttemptView]


class WebhookDeliveries(Reply):
    task_id: str
    webhook: str | None
    deliveries: list[WebhookDeliveryView]


class TaskSummary(Reply):
    """A task in a list: its status and progress, without payload, result or error (GET the
    task for those)."""

    id: str
    type: str
    priority: int
    status: TaskStatus
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)]
    server_id: str | None
    attempts: int
    created_at: Ms
    updated_at: Ms
    capabilities: Capabilities
    started_at: Ms | msgspec.UnsetType = msgspec.UNSET
    completed_at: Ms | msgspec.UnsetType = msgspec.UNSET
    message: str | msgspec.UnsetType = msgspec.UNSET


class TaskList(Reply):
    """A page of tasks, newest first."""

    tasks: list[TaskSummary]
    next_cursor: Annotated[
        str | None, msgspec.Meta(description="Pass as `cursor` for the next page; null on the last page")
    ]


class PriorityCount(Reply):
    priority: int
    count: int


class BacklogGroup(Reply):
    capabilities: Capabilities
    count: int
    reason: Literal["no_capable_server", "no_server_online", "capacity_full", "dispatching"]
    details: Annotated[
        str, msgspec.Meta(description='e.g. "312 tasks need `tpu`: no registered server has `tpu`"')
    ]


class QueueSummary(Reply):
    """The queue now."""

    pending: Annotated[int, msgspec.Meta(description="Tasks PENDING (the backlog)")]
    pending_by_priority: Annotated[
        list[PriorityCount], msgspec.Meta(description="The backlog per priority, highest first")
    ]
    processing: Annotated[int, msgspec.Meta(description="Tasks in flight (slots taken on the servers)")]
    capacity: Annotated[int, msgspec.Meta(description="Slots of the servers online now")]
    backlog: Annotated[
        list[BacklogGroup],
        msgspec.Meta(description="The backlog by capability set, largest first, and why it waits"),
    ]


class RetryReply(Reply):
    message: str
    task_id: str


class CancelReply(Reply):
    message: str
    task_id: str


class ServerRegistered(Reply):
    """`token` is a service token for the server's heartbeats."""

    server_id: str
    message: str
    token: str


class ServerEndpoints(Reply):
    predict: str
    health: str
    metrics: str | msgspec.UnsetType = msgspec.UNSET
    cancel: str | msgspec.UnsetType = msgspec.UNSET


class ServerHealth(Reply):
    """Health as last observed, by heartbeat or active check (null before the first)."""

    status: Literal["healthy", "unhealthy"] | None
    last_heartbeat: Ms | None
    last_check_at: Ms | None
    consecutive_failures: int
    ejected_until: Annotated[
        int | None,
        msgspec.Meta(description="Epoch ms: left out of selection after failed attempts until then"),
    ] = None


class ServerView(Reply):
    id: str
    name: str
    status: ServerStatus
    registered_at: Ms
    last_heartbeat: Ms | None
    uptime: Annotated[int, msgspec.Meta(description="Milliseconds since registration")]
    time_since_last_heartbeat: Annotated[
        int,
        msgspec.Meta(description="Milliseconds since the last heartbeat or healthy check, else registration"),
    ]
    groups: list[str]
    priority: Annotated[int, msgspec.Meta(description="Weight")]
    capabilities: list[str]
    max_concurrent: int
    active_tasks: int
    endpoints: ServerEndpoints
    maintenance_reason: str | None
    health: ServerHealth


class ServerList(Reply):
    servers: list[ServerView]


class HeartbeatReply(Reply):
    message: str
    server_id: str
    status: ServerStatus


class MaintenanceReply(Reply):
    message: str
    server_id: str
    status: ServerStatus
    maintenance_reason: str | None


class UnregisterReply(Reply):
    message: str
    server_id: str


class MetricValues(Reply):
    uptime: Annotated[int, msgspec.Meta(description="Milliseconds since registration")]
    tasks_processed: int
    success_count: int
    failure_count: int
    average_processing_time: Duration
    current_load: Annotated[float, msgspec.Meta(ge=0, description="Active tasks / maxConcurrent")]
    active_tasks: int
    max_concurrent: int
    reported: Annotated[dict[str, Any], msgspec.Meta(description="As the last heartbeat reported")]


class ServerMetrics(Reply):
    server_id: str
    metrics: MetricValues


class Health(Reply):
    """taskgate's own health: 200 when healthy, 503 when its store does not answer."""

    status: Literal["healthy", "unhealthy"]
    version: str
    store: Literal["ok", "unreachable"]
    time: Ms


class TopServer(Reply):
    server_id: str
    tasks_processed: int
    success_rate: Fraction


class HourlyCount(Reply):
    hour: Annotated[int, msgspec.Meta(ge=0, le=23, description="Hour of the day, UTC")]
    tasks: int


class TaskStats(Reply):
    """`pendingTasks` is the current backlog; the other counts are for the day."""

    total_tasks: int
    pending_tasks: int
    successful_tasks: int
    failed_tasks: int
    retried_tasks: int
    average_processing_time: Duration
    server_count: int
    top_servers: Annotated[list[TopServer], msgspec.Meta(max_length=5)]
    hourly_trend: Annotated[list[HourlyCount], msgspec.Meta(min_length=24, max_length=24)]


class HourStats(Reply):
    hour: Annotated[int, msgspec.Meta(ge=0, le=23, description="Hour of the day, UTC")]
    created: int
    completed: int
    failed: int
    average_time: Duration


class HourlyReport(Reply):
    date: Annotated[str, msgspec.Meta(pattern=ISO_DATE, description="YYYY-MM-DD, UTC")]
    hours: Annotated[list[HourStats], msgspec.Meta(min_length=24, max_length=24)]


class ServerStats(Reply):
    server_id: str
    tasks_processed: int
    success_count: int
    failure_count: int
    success_rate: Fraction
    average_processing_time: Duration
    uptime: Annotated[float, msgspec.Meta(ge=0, le=1, description="Share of healthy observations that day")]


class ServerLoad(Reply):
    load: Annotated[float, msgspec.Meta(ge=0)]
    active_tasks: int
    weight: int


class LoadBalancerStatus(Reply):
    algorithm: str
    server_distribution: dict[str, ServerLoad]
    total_active_tasks: int
    average_load: Annotated[float, msgspec.Meta(ge=0)]


class AlgorithmReply(Reply):
    message: str
    algorithm: str



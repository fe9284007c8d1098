"""What the API returns, as typed values: one Struct per reply body of the reference (and of
docs/API.md where taskgate adds fields). Field names are snake_case; the JSON is camelCase.

Unknown fields are ignored, not refused: a newer gateway may add fields to a reply, and an
older client must keep working against it.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import msgspec


class TaskStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"

    @property
    def is_finished(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.PROCESSING)


class ServerStatus(enum.StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"


class Reply(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Base of every reply: camelCase on the wire; fields absent from a reply keep their
    default and are left out again when the value is turned back into JSON."""


class TaskCreated(Reply):
    """The reply to creating a task with `async_=True`: the task is queued."""

    id: str
    status: TaskStatus
    created_at: int
    updated_at: int


class Attempt(Reply):
    """One time the task was sent to a backend (`ended_at` and `outcome` are None while it
    runs). Every field is always sent, and kept when turned back into JSON."""

    attempt: int
    server_id: str
    started_at: int
    ended_at: int | None
    outcome: str | None
    error: Any


QueueReason = Literal["no_capable_server", "no_server_online", "capacity_full", "backoff", "dispatching"]


class QueueInfo(Reply):
    """Why a PENDING task waits. `position` (1-based, among the tasks ahead of it for the same
    servers) and `estimated_start_at` (epoch ms) are None when the gateway does not know them."""

    reason: QueueReason | str  # str: a reason added by a newer gateway
    details: str
    position: int | None = None
    estimated_start_at: int | None = None


class Task(Reply):
    """A task as it stands (`GET /api/task/:id`). Times are epoch milliseconds. `history`
    and `capabilities` are empty, and `queue` None, from a gateway that does not send them."""

    id: str
    type: str
    priority: int
    status: TaskStatus
    progress: int
    server_id: str | None
    result: Any
    error: Any
    attempts: int
    created_at: int
    updated_at: int
    started_at: int | None = None
    completed_at: int | None = None
    message: str | None = None
    payload: dict[str, Any] | None = None  # what it was created with (None from a gateway that omits it)
    capabilities: list[str] = []
    history: list[Attempt] = []  # one entry per attempt, oldest first
    queue: QueueInfo | None = None  # while PENDING, from a gateway that explains the wait

    @property
    def is_finished(self) -> bool:
        """COMPLETED, FAILED, TIMEOUT or CANCELLED: nothing will change it but a retry."""
        return self.status.is_finished


class TaskSummary(Reply):
    """A task in a list (`GET /api/tasks`): what it is and how far it got, without payload,
    result or error (read those with `get_task`)."""

    id: str
    type: str
    priority: int
    status: TaskStatus
    progress: int
    server_id: str | None
    attempts: int
    created_at: int
    updated_at: int
    started_at: int | None = None
    completed_at: int | None = None
    message: str | None = None
    capabilities: list[str] = []

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished


class TaskPage(Reply):
    """A page of tasks, newest first; `next_cursor` fetches the next (None: the last page)."""

    tasks: list[TaskSummary]
    next_cursor: str | None


class PriorityCount(Reply):
    priority: int
    count: int


class BacklogGroup(Reply):
    """The PENDING tasks that need one capability set, and why they wait."""

    capabilities: list[str]
    count: int
    reason: QueueReason | str
    details: str


class QueueSummary(Reply):
    """The queue now: the backlog (per priority, highest first; per capability set, largest
    first, with why it waits), the tasks in flight, and the slots of the servers online."""

    pending: int
    pending_by_priority: list[PriorityCount]
    processing: int
    capacity: int
    backlog: list[BacklogGroup] = []


class WebhookAttempt(Reply):
    at: int
    duration_ms: int
    status_code: int | None
    error: str | None
    next_retry_at: int | None


class WebhookDelivery(Reply):
    """One POST of the finished task to its webhook, with each attempt made."""

    id: str
    url: str
    task_status: TaskStatus
    state: Literal["pending", "delivered", "failed"]
    created_at: int
    updated_at: int
    next_attempt_at: int | None
    attempts: list[WebhookAttempt]


class WebhookDeliveries(Reply):
    task_id: str
    webhook: str | None
    deliveries: list[WebhookDelivery]


class ServerToken(Reply):
    """A server's new service token (`rotate_server_token`); the previous one has ended."""

    server_id: str
    token: str
    message: str | None = None


class TaskAction(Reply):
    """The reply to a cancel or a retry."""

    message: str
    task_id: str


class ServerRegistered(Reply):
    """`token` is a service token for the server's heartbeats."""

    server_id: str
    message: str
    token: str


class Endpoints(Reply):
    predict: str
    health: str
    metrics: str | None = None
    cancel: str | None = None


class ServerHealth(Reply):
    """Health as last observed by heartbeat or active check (None before the first)."""

    status: Literal["healthy", "unhealthy"] | None
    last_heartbeat: int | None
    last_check_at: int | None
    consecutive_failures: int
    # Epoch ms: outlier detection left it out of selection after failed attempts until then.
    ejected_until: int | None = None


class Server(Reply):
    """A server of `GET /api/servers`. `uptime` and `time_since_last_heartbeat` are ms."""

    id: str
    name: str
    status: ServerStatus
    registered_at: int
    last_heartbeat: int | None
    uptime: int
    time_since_last_heartbeat: int | None
    groups: list[str]
    priority: int
    capabilities: list[str]
    max_concurrent: int
    active_tasks: int
    endpoints: Endpoints
    maintenance_reason: str | None
    health: ServerHealth


class ServerList(Reply):
    servers: list[Server]


class HeartbeatReply(Reply):
    message: str
    server_id: str
    status: ServerStatus


class MaintenanceReply(Reply):
    message: str
    server_id: str
    status: ServerStatus
    maintenance_reason: str | None


class ServerUnregistered(Reply):
    message: str
    server_id: str


class MetricValues(Reply):
    uptime: int
    tasks_processed: int
    success_count: int
    failure_count: int
    average_processing_time: int
    current_load: float
    active_tasks: int
    max_concurrent: int
    reported: dict[str, Any]


class ServerMetrics(Reply):
    server_id: str
    metrics: MetricValues


class TopServer(Reply):
    server_id: str
    tasks_processed: int
    success_rate: float


class HourlyCount(Reply):
    hour: int
    tasks: int


class TaskStats(Reply):
    """`pending_tasks` is the backlog now; the other counts are for the day asked (UTC)."""

    total_tasks: int
    pending_tasks: int
    successful_tasks: int
    failed_tasks: int
    retried_tasks: int
    average_processing_time: int
    server_count: int
    top_servers: list[TopServer]
    hourly_trend: list[HourlyCount]


class HourStats(Reply):
    hour: int
    created: int
    completed: int
    failed: int
    average_time: int


class HourlyReport(Reply):
    date: str
    hours: list[HourStats]


class ServerStats(Reply):
    """`uptime` here is the fraction (0-1) of the day's health observations that were healthy."""

    server_id: str
    tasks_processed: int
    success_count: int
    failure_count: int
    success_rate: float
    average_processing_time: int
    uptime: float


class ServerLoad(Reply):
    load: float
    active_tasks: int
    weight: int


class LoadBalancerStatus(Reply):
    algorithm: str
    server_distribution: dict[str, ServerLoad]
    total_active_tasks: int
    average_load: float


class AlgorithmSet(Reply):
    message: str
    algorithm: str


class OutputAccepted(Reply):
    """A chunk appended to a task's output (`append_output`): its place, from 0."""

    task_id: str
    index: int


class DayStats(Reply):
    """One day of a range (UTC): `failed` counts FAILED and TIMEOUT."""

    date: str
    created: int
    completed: int
    failed: int
    cancelled: int
    retried: int
    average_time: int


class RangeStats(Reply):
    """The days `start` to `end` (UTC, inclusive), counted as `task_stats` counts one day;
    `hourly` is the 24 hours when the range is one day."""

    start: str
    end: str
    total_tasks: int
    successful_tasks: int
    failed_tasks: int
    retried_tasks: int
    average_processing_time: int
    top_servers: list[TopServer]
    daily: list[DayStats]
    hourly: list[HourStats] | None = None


class Overview(Reply):
    """Everything the dashboard shows, from one request (`GET /api/overview`); `servers` is
    None for a user (admins only)."""

    generated_at: int
    queue: QueueSummary
    tasks: TaskPage
    servers: list[Server] | None
    stats: RangeStats
    load_balancer: LoadBalancerStatus

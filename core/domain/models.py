"""Tasks and servers as the core sees them, and their public (API) shapes."""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class TaskStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.PROCESSING)


class ServerStatus(enum.StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"


class AttemptRecord(msgspec.Struct, kw_only=True):
    """One time the task was sent to a backend: where, when, and how it ended (`outcome` is
    None while it runs). `error` names the server and the kind of failure, never a URL."""

    attempt: int
    server_id: str
    started_at: int
    ended_at: int | None = None
    outcome: str | None = None
    error: Any = None

    def to_api(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "serverId": self.server_id,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "outcome": self.outcome,
            "error": self.error,
        }


class Task(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    type: str
    priority: int
    payload: dict[str, Any]
    capabilities: list[str] = []
    is_async: bool = True
    timeout_ms: int | None = None
    webhook: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    progress: int = 0
    message: str | None = None
    server_id: str | None = None
    # The server of the last attempt that did not finish: the next attempt prefers another.
    previous_server_id: str | None = None
    # Every server whose attempt failed since the task last entered the queue afresh (create or
    # retry): the next attempts prefer the others.
    failed_servers: list[str] = []
    result: Any = None
    error: Any = None
    # Times the task was sent to a backend, ever; dispatch stops when it reaches attempt_limit.
    attempts: int = 0
    attempt_limit: int = 3
    retries: int = 0
    created_at: int
    updated_at: int
    # When the task last entered PENDING: FIFO order within a priority, and queue timeout.
    queued_at: int
    # Not dispatched before this time (backoff after a failed attempt).
    not_before: int = 0
    started_at: int | None = None
    completed_at: int | None = None
    # PROCESSING only: when the execution timeout fires.
    deadline: int | None = None
    # Finished tasks only: epoch seconds after which the store may drop the task (TTL).
    expires_at: int | None = None
    # One entry per attempt, oldest first (written with the claim and the release).
    history: list[AttemptRecord] = []
    # Streamed output: chunks appended so far and their encoded size (limits per task).
    output_chunks: int = 0
    output_bytes: int = 0

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "priority": self.priority,
            "payload": self.payload,
            "status": self.status.value,
            "progress": self.progress,
            "serverId": self.server_id,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "capabilities": list(self.capabilities),
        }
        if self.message is not None:
            body["message"] = self.message
        if self.started_at is not None:
            body["startedAt"] = self.started_at
        if self.completed_at is not None:
            body["completedAt"] = self.completed_at
        body["history"] = [entry.to_api() for entry in self.history]
        return body

    def to_summary(self) -> dict[str, Any]:
        """A task in a list: what it is and how far it got, without payload, result or error
        (each up to 256 KiB: a page of 200 must fit a Lambda's 6 MB reply)."""
        body = self.to_api()
        for bulky in ("payload", "result", "error", "history"):
            del body[bulky]
        return body


class OutputChunk(msgspec.Struct, kw_only=True):
    """One piece of a running task's streamed output, numbered from 0 in arrival order."""

    task_id: str
    index: int
    data: Any
    # The attempt that produced it (a retried task's output goes on numbering).
    attempt: int
    created_at: int
    # Epoch seconds after which the store may drop it (TTL), no earlier than its task.
    expires_at: int

    def to_api(self) -> dict[str, Any]:
        return {"index": self.index, "data": self.data}


class Endpoints(msgspec.Struct, kw_only=True, omit_defaults=True):
    predict: str
    health: str
    metrics: str | None = None
    cancel: str | None = None


class Server(msgspec.Struct, kw_only=True):
    id: str
    name: str
    endpoints: Endpoints
    api_key: str | None = None
    max_concurrent: int = 10
    capabilities: list[str] = []
    groups: list[str] = []
    priority: int = 1
    status: ServerStatus = ServerStatus.ONLINE
    maintenance_reason: str | None = None
    registered_at: int
    # The registration's service token: a token naming another id (an earlier registration
    # under this id, or one an admin rotated away) is refused. "" for servers registered
    # before tokens carried one, whose id-less tokens stay valid until a rotation.
    token_id: str = ""
    # Health, fed by heartbeats (push) and active checks (pull).
    health_status: str | None = None
    last_heartbeat: int | None = None
    last_check_at: int | None = None
    last_healthy_at: int | None = None
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    reported: dict[str, Any] = {}
    # Slots in use; changed only together with a task entering or leaving PROCESSING here.
    active_tasks: int = 0
    # When a task last took a slot here (reconciliation leaves recent claims alone).
    last_claim_at: int | None = None
    # Exponentially weighted moving average of processing time (response-time balancing).
    latency_ewma_ms: int | None = None
    # Passive outlier detection (core/domain/outlier.py): failed attempts in a row, recent
    # ejections, when the current or last ejection ends, and when the slow start began.
    outlier_failures: int = 0
    ejections: int = 0
    ejected_until: int | None = None
    slow_start_from: int | None = None
    # Lifetime counters, bumped in the same write that frees the slot.
    tasks_processed: int = 0
    success_count: int = 0
    failure_count: int = 0
    processing_ms_total: int = 0
    # Optimistic lock for read-modify-write of health and settings (never for slots).
    version: int = 0

    @property
    def last_seen_at(self) -> int:
        return max(self.registered_at, self.last_heartbeat or 0, self.last_healthy_at or 0)

    @property
    def free_slots(self) -> int:
        return max(0, self.max_concurrent - self.active_tasks)

    def to_api(self, now: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "registeredAt": self.registered_at,
            "lastHeartbeat": self.last_heartbeat,
            "uptime": max(0, now - self.registered_at),
            # Existing clients read a number: the last sign of life (a heartbeat, a healthy
            # check), else the registration.
            "timeSinceLastHeartbeat": max(0, now - self.last_seen_at),
            "groups": list(self.groups),
            "priority": self.priority,
            "capabilities": list(self.capabilities),
            "maxConcurrent": self.max_concurrent,
            "activeTasks": self.active_tasks,
            "endpoints": msgspec.to_builtins(self.endpoints),
            "maintenanceReason": self.maintenance_reason,
            "health": {
                "status": self.health_status,
                "lastHeartbeat": self.last_heartbeat,
                "lastCheckAt": self.last_check_at,
                "consecutiveFailures": self.consecutive_failures,
                "ejectedUntil": (
                    self.ejected_until
                    if self.ejected_until is not None and now < self.ejected_until
                    else None
                ),
            },
        }

    def metrics_api(self, now: int) -> dict[str, Any]:
        finished = self.success_count + self.failure_count
        return {
            "serverId": self.id,
            "metrics": {
                "uptime": max(0, now - self.registered_at),
                "tasksProcessed": self.tasks_processed,
                "successCount": self.success_count,
                "failureCount": self.failure_count,
                "averageProcessingTime": (round(self.processing_ms_total / finished) if finished else 0),
                "currentLoad": round(self.active_tasks / self.max_concurrent, 4),
                "activeTasks": self.active_tasks,
                "maxConcurrent": self.max_concurrent,
                "reported": self.reported,
            },
        }


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class DeliveryAttempt(msgspec.Struct, kw_only=True):
    """One POST to a webhook (or one whose sender stopped before recording it)."""

    at: int
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    # When the next attempt is due, if there is one.
    next_retry_at: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "durationMs": self.duration_ms,
            "statusCode": self.status_code,
            "error": self.error,
            "nextRetryAt": self.next_retry_at,
        }


class WebhookDelivery(msgspec.Struct, kw_only=True):
    """The finished task, to be POSTed to its webhook: one per time the task finished
    (`round` is the task's `retries` then, so a retried task that finishes again is another)."""

    task_id: str
    round: int
    url: str
    task_status: TaskStatus
    # The task as GET showed it when it finished: the body of every attempt.
    body: str
    state: DeliveryState = DeliveryState.PENDING
    # Attempts claimed so far; every claim and every outcome is conditional on it.
    attempts: int = 0
    # PENDING only: when the next attempt may be claimed (a claim moves it past its lease).
    next_attempt_at: int
    created_at: int
    updated_at: int
    log: list[DeliveryAttempt] = []
    # Epoch seconds after which the store may drop it (TTL), like the task.
    expires_at: int | None = None

    @property
    def id(self) -> str:
        return f"{self.task_id}.{self.round}"

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "taskStatus": self.task_status.value,
            "state": self.state.value,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "nextAttemptAt": self.next_attempt_at if self.state is DeliveryState.PENDING else None,
            "attempts": [attempt.to_api() for attempt in self.log],
        }

"""Operational metrics: what the services measure, for whoever records them.

In AWS the Lambda entry points record them as CloudWatch embedded-metric-format log lines
(handlers/_lambda.py: no API call, no cost per request); on one machine nothing records them
here, since /metrics reads the store's counters and its own histogram (core/services/stats.py).

| Metric          | Unit         | When                                                           |
|-----------------|--------------|----------------------------------------------------------------|
| TasksCreated    | Count        | a task is created                                              |
| TasksCompleted  | Count        | a task reaches COMPLETED                                       |
| TasksFailed     | Count        | a task reaches FAILED                                          |
| TasksTimedOut   | Count        | a task reaches TIMEOUT (in the queue or on a backend)          |
| TasksCancelled  | Count        | a task is cancelled                                            |
| QueueWait       | Milliseconds | PENDING -> PROCESSING: from entering the queue to the claim    |
| DispatchLatency | Milliseconds | the predict call: from the claim to the backend's answer       |
"""

from __future__ import annotations

from core.domain.models import Task, TaskStatus

FINISHED = {
    TaskStatus.COMPLETED: "TasksCompleted",
    TaskStatus.FAILED: "TasksFailed",
    TaskStatus.TIMEOUT: "TasksTimedOut",
    TaskStatus.CANCELLED: "TasksCancelled",
}


class Telemetry:
    """Records nothing; the AWS entry points pass one that does."""

    def count(self, name: str, value: int = 1) -> None:
        """Add `value` to the counter `name`."""

    def duration(self, name: str, ms: float) -> None:
        """One observation of the duration `name`, in milliseconds."""


class TaskMetrics:
    """The task-event listener that turns task writes into the metrics of the table above."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def __call__(self, task: Task, previous: TaskStatus | None) -> None:
        status = task.status
        if previous is None:
            self.telemetry.count("TasksCreated")
        elif status is previous:
            return
        elif status in FINISHED:
            self.telemetry.count(FINISHED[status])
        elif previous is TaskStatus.PENDING and status is TaskStatus.PROCESSING:
            started = task.started_at if task.started_at is not None else task.updated_at
            self.telemetry.duration("QueueWait", max(0, started - task.queued_at))

"""Reply bodies of the routes added for the dashboard and streamed output: the overview (the
whole page in one read), statistics over a range of days, and an appended output chunk.
Like `core.domain.schemas`, the unit tests decode real replies with these types."""

from __future__ import annotations

from typing import Annotated

import msgspec

from core.domain.replies import (
    ISO_DATE,
    Duration,
    HourStats,
    LoadBalancerStatus,
    Ms,
    QueueSummary,
    Reply,
    ServerView,
    TaskList,
    TopServer,
)

Day = Annotated[str, msgspec.Meta(pattern=ISO_DATE, description="YYYY-MM-DD, UTC")]


class OutputAccepted(Reply):
    """A chunk stored: its place in the task's output."""

    task_id: str
    index: Annotated[int, msgspec.Meta(ge=0, description="The chunk's number, from 0")]


class DayStats(Reply):
    date: Day
    created: int
    completed: int
    failed: Annotated[int, msgspec.Meta(description="FAILED + TIMEOUT")]
    cancelled: int
    retried: int
    average_time: Duration


class RangeStats(Reply):
    """The days `start`-`end` (UTC, inclusive), counted as /api/stats/tasks counts one day."""

    start: Day
    end: Day
    total_tasks: int
    successful_tasks: int
    failed_tasks: int
    retried_tasks: int
    average_processing_time: Duration
    top_servers: Annotated[list[TopServer], msgspec.Meta(max_length=5)]
    daily: Annotated[list[DayStats], msgspec.Meta(min_length=1, max_length=31)]
    hourly: Annotated[
        list[HourStats] | None, msgspec.Meta(description="The 24 hours, when the range is one day")
    ]


class Overview(Reply):
    """Everything the dashboard shows, from one request."""

    generated_at: Ms
    queue: QueueSummary
    tasks: TaskList
    servers: Annotated[list[ServerView] | None, msgspec.Meta(description="Admins only; null otherwise")]
    stats: RangeStats
    load_balancer: LoadBalancerStatus

"""What the client commands print: progress lines, aligned tables, JSON, dates."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, TextIO

import msgspec

from taskgate.models import (
    QueueInfo,
    QueueSummary,
    RangeStats,
    Server,
    Task,
    TaskStats,
    TaskStatus,
    TaskSummary,
)

BAR_WIDTH = 30


class ProgressView:
    """Draws a task's progress on `stream`: one line redrawn in place on a terminal, a line
    per change otherwise (a log file or a pipe gets no carriage returns). A reading that
    changes nothing drawn (a new message, the same progress) is not drawn again."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.redraw = stream.isatty()
        self.drawn: str | None = None
        self.width = 0

    def __call__(self, task: Task) -> None:
        line = progress_line(task)
        if line == self.drawn:
            return
        if self.redraw:
            # A shorter line (the reason went away) must not leave the old one's tail.
            self.stream.write(f"\r{line.ljust(self.width)}")
            self.width = max(self.width, len(line))
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()
        self.drawn = line

    def end(self) -> None:
        """Leave the terminal's line: what is printed next starts on a line of its own."""
        if self.redraw and self.drawn is not None:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = None


def progress_line(task: Task) -> str:
    """`[#########.....................]  30% PROCESSING`, the same width for every status;
    a PENDING task that says why it waits adds the reason."""
    progress = max(0, min(100, task.progress))
    filled = BAR_WIDTH * progress // 100
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    line = f"[{bar}] {progress:3d}% {task.status.value:<10}"
    if task.status is TaskStatus.PENDING and task.queue is not None:
        line += f" waiting: {cell(task.queue.reason)}"
    return line


def waiting_line(queue: QueueInfo) -> str:
    """`waiting (capacity_full, position 3, start expected 2026-12-04T15:30:02Z): <details>`"""
    facts = [str(queue.reason)]
    if queue.position is not None:
        facts.append(f"position {queue.position}")
    if queue.estimated_start_at is not None:
        facts.append(f"start expected {timestamp(queue.estimated_start_at)}")
    return f"waiting ({', '.join(facts)}): {queue.details}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns, two spaces apart, no trailing blanks."""
    everything = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[column]) for row in everything) for column in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in everything
    )


def servers_table(servers: list[Server]) -> str:
    """Aligned columns: id, name, status, health, active/max slots, capabilities."""
    header = ("ID", "NAME", "STATUS", "HEALTH", "ACTIVE/MAX", "CAPABILITIES")
    rows = [
        (
            cell(server.id),
            cell(server.name),
            server.status.value,
            server.health.status or "-",
            f"{server.active_tasks}/{server.max_concurrent}",
            cell(",".join(server.capabilities)) or "-",
        )
        for server in servers
    ]
    return table(header, rows)


def tasks_table(tasks: Sequence[TaskSummary]) -> str:
    """Aligned columns: id, type, status, progress, priority, attempts, server, created (UTC)."""
    header = ("ID", "TYPE", "STATUS", "PROGRESS", "PRIORITY", "ATTEMPTS", "SERVER", "CREATED")
    rows = [
        (
            cell(task.id),
            cell(task.type),
            task.status.value,
            f"{task.progress}%",
            str(task.priority),
            str(task.attempts),
            cell(task.server_id or "-"),
            timestamp(task.created_at),
        )
        for task in tasks
    ]
    return table(header, rows)


def stats_text(day: TaskStats, queue: QueueSummary, date: str) -> str:
    """The day's counts, the queue now, the top servers and the busiest hours, as lines."""
    lines = [
        f"tasks on {date} (UTC): {day.total_tasks} created, {day.successful_tasks} completed, "
        f"{day.failed_tasks} failed or timed out, {day.retried_tasks} retried; "
        f"average processing time {day.average_processing_time} ms",
        f"queue now: {queue.pending} pending, {queue.processing} in flight, {queue.capacity} slots online",
    ]
    lines.extend(queue_lines(queue))
    lines.append(f"servers: {day.server_count}")
    for top in day.top_servers:
        lines.append(
            f"  {cell(top.server_id)}: {top.tasks_processed} tasks, {top.success_rate:.0%} succeeded"
        )
    busy = [hour for hour in day.hourly_trend if hour.tasks]
    if busy:
        lines.append("tasks per hour (UTC): " + ", ".join(f"{h.hour:02d}h {h.tasks}" for h in busy))
    return "\n".join(lines)


def range_text(stats: RangeStats, queue: QueueSummary) -> str:
    """A range of days: the totals, the queue now, the top servers, a line per day."""
    lines = [
        f"tasks from {stats.start} to {stats.end} (UTC): {stats.total_tasks} created, "
        f"{stats.successful_tasks} completed, {stats.failed_tasks} failed or timed out, "
        f"{stats.retried_tasks} retried; average processing time {stats.average_processing_time} ms",
        f"queue now: {queue.pending} pending, {queue.processing} in flight, {queue.capacity} slots online",
    ]
    lines.extend(queue_lines(queue))
    for top in stats.top_servers:
        lines.append(
            f"  {cell(top.server_id)}: {top.tasks_processed} tasks, {top.success_rate:.0%} succeeded"
        )
    header = ("DATE", "CREATED", "COMPLETED", "FAILED", "CANCELLED", "RETRIED", "AVERAGE MS")
    rows = [
        (
            d.date,
            str(d.created),
            str(d.completed),
            str(d.failed),
            str(d.cancelled),
            str(d.retried),
            str(d.average_time),
        )
        for d in stats.daily
    ]
    return "\n".join([*lines, table(header, rows)])


def queue_lines(queue: QueueSummary) -> list[str]:
    """The backlog per priority, and per capability set with why it waits."""
    lines = []
    if queue.pending_by_priority:
        by_priority = ", ".join(f"priority {p.priority}: {p.count}" for p in queue.pending_by_priority)
        lines.append(f"  pending by priority: {by_priority}")
    lines.extend(f"  waiting ({group.reason}): {cell(group.details)}" for group in queue.backlog)
    return lines


def timestamp(epoch_ms: int) -> str:
    """`2026-12-04T15:20:01Z`: epoch milliseconds as UTC, to the second."""
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def cell(text: str) -> str:
    # A name with a newline or a tab would break the table's lines and columns.
    return " ".join(text.split())


def to_json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def chunk_line(data: Any) -> str:
    """An output chunk as one line: a string as its text, anything else as compact JSON."""
    if isinstance(data, str):
        return data
    return msgspec.json.encode(data).decode()

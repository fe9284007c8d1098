"""Statistics over a range of days (1-31, UTC), from the same hourly and per-server counters
as the one-day views in core.services.stats: one read of every key of the range."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from core.domain.models import Server
from core.errors import ValidationError
from core.services import stats
from core.services.context import Context

MAX_DAYS = 31


def parse_days(text: str | None) -> int:
    if text is None:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
        raise ValidationError(f"Invalid query parameter days: expected a whole number 1-{MAX_DAYS}")
    return int(text)


def range_stats(ctx: Context, end: date, days: int, servers: list[Server]) -> dict[str, Any]:
    """The RangeStats body for the `days` days ending with `end`."""
    dates = [end - timedelta(days=back) for back in range(days - 1, -1, -1)]
    hour_keys = {day: stats.hour_keys(day) for day in dates}
    server_keys = [stats.server_key(day, s.id) for day in dates for s in servers]
    found = stats.read_counters(ctx, [*(k for keys in hour_keys.values() for k in keys), *server_keys])
    daily = []
    total: dict[str, int] = {}
    for day in dates:
        counts = stats.sum_counts(found.get(key, {}) for key in hour_keys[day])
        total = stats.sum_counts([total, counts])
        daily.append(
            {
                "date": day.isoformat(),
                "created": counts.get("created", 0),
                "completed": counts.get("completed", 0),
                "failed": counts.get("failed", 0) + counts.get("timed_out", 0),
                "cancelled": counts.get("cancelled", 0),
                "retried": counts.get("retried", 0),
                "averageTime": stats.average(counts.get("processing_ms", 0), counts.get("completed", 0)),
            }
        )
    ranked = []
    for server in servers:
        counts = stats.sum_counts(found.get(stats.server_key(day, server.id), {}) for day in dates)
        view = stats.server_view(server.id, counts)
        if view["tasksProcessed"]:
            ranked.append(view)
    ranked.sort(key=lambda v: (-v["tasksProcessed"], v["serverId"]))
    hourly = stats.hour_rows(hour_keys[end], found) if days == 1 else None
    return {
        "start": dates[0].isoformat(),
        "end": end.isoformat(),
        "totalTasks": total.get("created", 0),
        "successfulTasks": total.get("completed", 0),
        "failedTasks": total.get("failed", 0) + total.get("timed_out", 0),
        "retriedTasks": total.get("retried", 0),
        "averageProcessingTime": stats.average(total.get("processing_ms", 0), total.get("completed", 0)),
        "topServers": [
            {key: view[key] for key in ("serverId", "tasksProcessed", "successRate")}
            for view in ranked[: stats.TOP_SERVERS]
        ],
        "daily": daily,
        "hourly": hourly,
    }

"""GET /api/overview: everything the dashboard shows in one request (one rate-limit hit per
refresh instead of six): the queue, a page of tasks, the servers (admins), statistics over a
range of days and the load distribution. The fleet is read once and shared by every part."""

from __future__ import annotations

from typing import Any

from core.domain import auth
from core.domain.auth import Principal
from core.services import stats, stats_range, task_listing
from core.services.context import Context


def overview(
    ctx: Context,
    principal: Principal,
    *,
    status: str | None = None,
    limit: str | None = None,
    days: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    auth.require_any(principal, auth.USER, auth.ADMIN)
    now = ctx.now()
    day_count = stats_range.parse_days(days)
    last_day = stats.parse_day(end, now)
    page = task_listing.list_tasks(ctx, principal, status=status, limit=limit, cursor=None)
    servers = ctx.store.list_servers()
    return {
        "generatedAt": now,
        "queue": task_listing.queue_view(ctx, servers),
        "tasks": page,
        "servers": [s.to_api(now) for s in servers] if principal.is_admin else None,
        "stats": stats_range.range_stats(ctx, last_day, day_count, servers),
        "loadBalancer": stats.load_view(ctx, servers),
    }

"""`GET /metrics`: Prometheus text exposition, one machine only (`taskgate serve`).

Public, like /health: scrapers rarely carry a bearer token, and an admin token in a scrape
config would be a standing admin credential. It shows counts, server ids and slot numbers;
never task ids, payloads, owners or endpoints. `taskgate serve` listens on 127.0.0.1 by default;
whoever exposes it further should put /metrics behind their proxy's own access rule.

Not in the OpenAPI document (it is not JSON) and not deployed in AWS, where CloudWatch has
the numbers. The dispatch latency histogram is this process's, since it started.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.services import stats
from handlers._http import context

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _family(name: str, kind: str, help_text: str, samples: list[tuple[str, str, float | int]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{suffix}{labels} {value}" for suffix, labels, value in samples]
    return lines


def exposition(gauges: stats.Gauges, latency: stats.Histogram | None) -> str:
    servers = [(f'{{server="{_label(s.id)}"}}', s) for s in gauges.servers]
    lines = [
        *_family(
            "taskgate_tasks",
            "gauge",
            "Tasks now PENDING or PROCESSING.",
            [("", '{status="PENDING"}', gauges.pending), ("", '{status="PROCESSING"}', gauges.processing)],
        ),
        *_family(
            "taskgate_tasks_finished_today",
            "gauge",
            "Tasks that reached a final status today (UTC).",
            [("", f'{{status="{status}"}}', count) for status, count in gauges.finished_today.items()],
        ),
        *_family(
            "taskgate_queue_depth", "gauge", "PENDING tasks waiting for a server.", [("", "", gauges.pending)]
        ),
        *_family(
            "taskgate_server_active_tasks",
            "gauge",
            "Slots in use on a server.",
            [("", labels, s.active_tasks) for labels, s in servers],
        ),
        *_family(
            "taskgate_server_max_concurrent",
            "gauge",
            "Slots a server has.",
            [("", labels, s.max_concurrent) for labels, s in servers],
        ),
    ]
    if latency is not None:
        buckets = latency.buckets()
        lines += _family(
            "taskgate_dispatch_latency_seconds",
            "histogram",
            "Time from entering PENDING to PROCESSING, in this process.",
            [
                *(("_bucket", f'{{le="{_le(bound)}"}}', count) for bound, count in buckets),
                ("_sum", "", latency.sum),
                ("_count", "", buckets[-1][1]),
            ],
        )
    return "\n".join(lines) + "\n"


async def metrics(request: Request) -> Response:
    ctx = context(request)
    found = stats.recorder(ctx)
    body = exposition(stats.gauges(ctx), found.dispatch_latency if found else None)
    return Response(body, media_type=CONTENT_TYPE)


routes = [Route("/metrics", metrics, methods=["GET"], include_in_schema=False)]

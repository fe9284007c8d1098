"""What each documented route is: summary, tag, bodies, parameters, errors (the OpenAPI
document's `OPERATIONS`, which `handlers.openapi.build_spec` checks against the routes served)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.domain import prefer
from core.domain import replies as r
from core.domain import schemas as s
from core.domain import schemas_overview as so
from core.domain.models import ServerStatus, TaskStatus
from core.services import task_listing


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    # The 200 body's type (a tuple: one of these); str and dict describe non-Struct bodies.
    response: Any
    # The Struct the handler passes to `core.domain.schemas.decode`.
    request: type[s.Request] | None = None
    body_required: bool = True
    example: dict[str, Any] | None = None
    # Errors particular to the route; 401, 429 and 503 come with auth, 500 with every route.
    errors: tuple[int, ...] = ()
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    public: bool = False
    description: str = ""
    media_type: str = "application/json"
    # 302: the route redirects (its `description` says where) instead of answering 200.
    status: int = 200


DATE_QUERY = Param(
    "date", "Date in YYYY-MM-DD format, UTC (defaults to today)", {"type": "string", "pattern": r.ISO_DATE}
)
STATUS_QUERY = Param("status", "Filter by status", {"enum": [status.value for status in ServerStatus]})
GROUP_QUERY = Param("group", "Filter by server group", {"type": "string"})
IDEMPOTENCY_HEADER = Param(
    "Idempotency-Key",
    "Retrying with the same key (per principal, for 24 h) and the same body returns the first "
    "request's task (200, with `Idempotent-Replayed: true`) instead of creating another; the same "
    "key with another body is 409. 1-255 printable ASCII characters.",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
)
TASK_STATUS_QUERY = Param(
    "status", "Only tasks in this status", {"enum": [status.value for status in TaskStatus]}
)
LIMIT_QUERY = Param(
    "limit",
    f"Tasks per page (default {task_listing.DEFAULT_LIMIT})",
    {"type": "integer", "minimum": 1, "maximum": task_listing.MAX_LIMIT},
)
CURSOR_QUERY = Param(
    "cursor",
    "The `nextCursor` of the previous page",
    {"type": "string", "pattern": task_listing.CURSOR_PATTERN},
)

PREFER_HEADER = Param(
    "Prefer",
    f"`wait=N` ({prefer.MIN_WAIT_S}-{prefer.MAX_WAIT_S} s): reply when the task ends or after N seconds "
    "(capped by the deployment's SYNC_WAIT_MAX), with the task as it then stands; the reply says "
    "`Preference-Applied: wait=<seconds waited at most>`. Other preferences are ignored.",
    {"type": "string", "example": "wait=10"},
)
LAST_EVENT_ID_HEADER = Param(
    "Last-Event-ID",
    "The `id` of the last `output` event received: the stream resumes with the next chunk "
    "(EventSource sends it by itself when it reconnects).",
    {"type": "string", "pattern": "^[0-9]{1,9}$"},
)
DAYS_QUERY = Param(
    "days",
    "Statistics over this many days, ending with `end` (default 1)",
    {"type": "integer", "minimum": 1, "maximum": 31},
)
END_QUERY = Param(
    "end",
    "The last day of the statistics, YYYY-MM-DD, UTC (defaults to today)",
    {"type": "string", "pattern": r.ISO_DATE},
)

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/api/task"): Operation(
        "Create task",
        "Tasks",
        (r.TaskCreated, r.TaskView),
        s.CreateTask,
        example={
            "type": "video-processing",
            "priority": 1,
            "payload": {"video_url": "https://example.com/video.mp4"},
            "capabilities": ["video"],
            "async": True,
        },
        errors=(400, 403, 409, 413),
        headers=(IDEMPOTENCY_HEADER, PREFER_HEADER),
        description="Creates a new task for processing. With `async: false` the reply waits (SYNC_WAIT_S, "
        "25 s by default) and is the task as it then stands, with its result if it finished; "
        "`Prefer: wait=N` chooses the wait (and answers with the task the same way). With a `webhook` URL, "
        "the finished task is POSTed there, signed (see the README). 409: the `Idempotency-Key` was "
        "used with another body.",
    ),
    ("GET", "/api/tasks"): Operation(
        "List tasks",
        "Tasks",
        r.TaskList,
        errors=(400, 403),
        query=(TASK_STATUS_QUERY, LIMIT_QUERY, CURSOR_QUERY),
        description="Tasks newest first, a page at a time: every task for an admin, a user's own "
        "tasks otherwise. A page may hold fewer than `limit` tasks while `nextCursor` is set.",
    ),
    ("GET", "/api/task/{id}"): Operation(
        "Get task status",
        "Tasks",
        r.TaskView,
        errors=(400, 404),
        description="Retrieves the current status of a task; while it is PENDING, `queue` says why it"
        " waits (`reason`, `details`) and, when known, its `position` and `estimatedStartAt`. `history`"
        " has one entry per attempt.",
    ),
    ("PUT", "/api/task/{id}"): Operation(
        "Update task",
        "Tasks",
        r.TaskView,
        s.UpdateTask,
        example={
            "status": "COMPLETED",
            "result": {"output_url": "https://example.com/processed.mp4", "duration": 120},
        },
        errors=(400, 403, 404, 409, 413),
        description="Updates task status (called by backend servers with their `callback_token`). "
        "Only a PROCESSING task can be updated.",
    ),
    ("POST", "/api/task/{id}/retry"): Operation(
        "Retry failed task",
        "Tasks",
        r.RetryReply,
        errors=(400, 403, 404, 409),
        description="Retries a FAILED, TIMEOUT or CANCELLED task.",
    ),
    ("POST", "/api/task/{id}/cancel"): Operation(
        "Cancel task",
        "Tasks",
        r.CancelReply,
        errors=(400, 403, 404, 409),
        description="Cancels a PENDING or PROCESSING task.",
    ),
    ("GET", "/api/task/{id}/webhooks"): Operation(
        "Get webhook deliveries",
        "Tasks",
        r.WebhookDeliveries,
        errors=(400, 404),
        description="Every delivery of the finished task to its `webhook` and each attempt: when, the "
        "receiver's status or the error, how long it took, and when the next retry is due. The task's "
        "owner or an admin; anyone else gets 404.",
    ),
    ("POST", "/api/task/{id}/output"): Operation(
        "Append output",
        "Tasks",
        so.OutputAccepted,
        s.AppendOutput,
        example={"data": {"frame": 12, "text": "partial caption"}},
        errors=(400, 403, 404, 409, 413),
        description="A backend appends one chunk of a PROCESSING task's streamed output, with the task's "
        "`callback_token` (or its server's service token). `data` is any JSON value. 413 past the chunk "
        "limit (OUTPUT_CHUNK_MAX_BYTES, 64 KiB encoded) or the task's (OUTPUT_TASK_MAX_BYTES, 4 MiB; "
        "OUTPUT_TASK_MAX_CHUNKS, 10,000); 409 once the task is not PROCESSING.",
    ),
    ("GET", "/api/task/{id}/stream"): Operation(
        "Stream task output",
        "Tasks",
        str,
        errors=(400, 404),
        headers=(LAST_EVENT_ID_HEADER,),
        media_type="text/event-stream",
        description="Server-Sent Events for the task's owner or an admin: `status` (the task, as GET "
        "returns it, now and on each change), `output` (`{index, data}` for every chunk from the first, "
        "with `id: <index>`), then `done` with the finished task, and the stream ends. On one machine the "
        "stream stays open until `done`; on AWS each response carries what arrives within STREAM_WAIT_S "
        "(20 s), starts with `retry:`, and the client reconnects with `Last-Event-ID`.",
    ),
    ("POST", "/api/servers"): Operation(
        "Register server",
        "Servers",
        r.ServerRegistered,
        s.RegisterServer,
        example={
            "name": "gpu-server-01",
            "endpoints": {
                "predict": "https://server1.example.com/predict",
                "health": "https://server1.example.com/health",
                "metrics": "https://server1.example.com/metrics",
            },
            "apiKey": "server-api-key",
            "maxConcurrent": 10,
            "capabilities": ["video", "image"],
            "groups": ["production"],
            "priority": 1,
        },
        errors=(400, 403, 409, 413),
        description="Registers a new backend server. The reply's `token` is a service token for its heartbeats.",
    ),
    ("GET", "/api/servers"): Operation(
        "List servers", "Servers", r.ServerList, errors=(400, 403), query=(STATUS_QUERY, GROUP_QUERY)
    ),
    ("POST", "/api/servers/{id}/heartbeat"): Operation(
        "Update server heartbeat",
        "Servers",
        r.HeartbeatReply,
        s.Heartbeat,
        body_required=False,
        example={"status": "healthy", "activeTasks": 3, "metrics": {"cpu": 45, "memory": 60, "gpu": 80}},
        errors=(400, 403, 404, 413),
        description="Updates server heartbeat and health status (admin, or the server's own service token).",
    ),
    ("DELETE", "/api/servers/{id}"): Operation(
        "Unregister server",
        "Servers",
        r.UnregisterReply,
        errors=(400, 403, 404),
        description="Removes a server; its PROCESSING tasks go back to the queue.",
    ),
    ("POST", "/api/servers/{id}/maintenance"): Operation(
        "Set maintenance mode",
        "Servers",
        r.MaintenanceReply,
        s.Maintenance,
        example={"maintenance": True, "reason": "Scheduled maintenance"},
        errors=(400, 403, 404, 413),
        description="Enables or disables maintenance mode: no new tasks; tasks in flight finish.",
    ),
    ("GET", "/api/servers/{id}/metrics"): Operation(
        "Get server metrics", "Servers", r.ServerMetrics, errors=(400, 403, 404)
    ),
    ("POST", "/api/servers/{id}/token"): Operation(
        "Rotate service token",
        "Servers",
        r.ServerRegistered,
        errors=(400, 403, 404),
        description="Issues a new service token for the server (admin). Every earlier token of the "
        "server is refused from this moment, as are those of an earlier registration under the same id.",
    ),
    ("GET", "/api/stats/tasks"): Operation(
        "Get task statistics", "Statistics", r.TaskStats, errors=(400, 403), query=(DATE_QUERY,)
    ),
    ("GET", "/api/stats/hourly"): Operation(
        "Get hourly report", "Statistics", r.HourlyReport, errors=(400, 403), query=(DATE_QUERY,)
    ),
    ("GET", "/api/stats/servers/{id}"): Operation(
        "Get server statistics", "Statistics", r.ServerStats, errors=(400, 403, 404), query=(DATE_QUERY,)
    ),
    ("GET", "/api/stats/queue"): Operation(
        "Get queue summary",
        "Statistics",
        r.QueueSummary,
        errors=(403,),
        description="The backlog by priority, the tasks in flight, the capacity online now, and the"
        " backlog by capability set with why each set waits.",
    ),
    ("GET", "/api/overview"): Operation(
        "Get the dashboard's overview",
        "Statistics",
        so.Overview,
        errors=(400, 403),
        query=(TASK_STATUS_QUERY, LIMIT_QUERY, DAYS_QUERY, END_QUERY),
        description="Everything the dashboard shows, in one request: the queue, the newest tasks (of "
        "`status`, up to `limit`; a user's own), the servers (admins; null otherwise), statistics over "
        "`days` days ending with `end` (per day, and per hour when it is one day) and the load distribution.",
    ),
    ("GET", "/api/stats/load-balancer"): Operation(
        "Get load balancer status",
        "Load Balancer",
        r.LoadBalancerStatus,
        errors=(403,),
        description="Gets current load distribution and algorithm.",
    ),
    ("POST", "/api/stats/load-balancer/algorithm"): Operation(
        "Set load balancer algorithm",
        "Load Balancer",
        r.AlgorithmReply,
        s.SetAlgorithm,
        example={"algorithm": "least-connections"},
        errors=(400, 403, 413),
        description="Changes the load balancing algorithm (admin only).",
    ),
    ("GET", "/health"): Operation(
        "taskgate's health", "System", r.Health, public=True, description="200 when healthy, 503 when not."
    ),
    ("GET", "/openapi.json"): Operation("This document", "System", dict[str, Any], public=True),
    ("GET", "/docs"): Operation(
        "Interactive documentation (Swagger UI)", "System", str, public=True, media_type="text/html"
    ),
    ("GET", "/"): Operation(
        "Redirect to the dashboard",
        "System",
        str,
        public=True,
        status=302,
        description="302 to `dashboard` (relative, so it works under a path prefix).",
    ),
    ("GET", "/dashboard"): Operation(
        "Operations dashboard",
        "System",
        str,
        public=True,
        media_type="text/html",
        description="A page for operators: servers (with maintenance and removal), the queue and its "
        "tasks (cancel, retry, each attempt, streamed output), statistics over a range of days and the "
        "load-balancing algorithm. It calls this API (one /api/overview request per refresh) with a "
        "token pasted into it.",
    ),
}

"""The OpenAPI document, built from the routes being served and the msgspec Structs that
validate requests (and describe replies): no schema is written twice.

`OPERATIONS` says what the routes cannot: summary, tag, bodies, parameters, errors. A served
route without an entry, or an entry without a served route, makes `build_spec` raise, so the
document and the API cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
from starlette.routing import BaseRoute, Route, WebSocketRoute

from core.domain import schemas as s
from core.domain.ids import _PATH_ID
from core.domain.models import ServerStatus, TaskStatus
from core.services import task_listing
from core.services.system import VERSION
from handlers._http import STATUS

OPENAPI = "3.1.0"
REF = "#/components/schemas/{name}"
TAGS = {
    "Tasks": "Endpoints for managing task lifecycle.",
    "Servers": "Endpoints for managing backend servers (Admin role required).",
    "Statistics": "Endpoints for retrieving system statistics.",
    "Load Balancer": "Endpoints for managing load balancing.",
    "System": "taskgate's own health, and this documentation.",
}


class ErrorDoc(NamedTuple):
    name: str
    description: str
    details: str  # the example's, from the reference where it has one


ERRORS = {
    400: ErrorDoc(
        "BadRequest",
        "Malformed JSON, a missing, unknown or invalid field, or a malformed id",
        "Missing required field: priority",
    ),
    401: ErrorDoc(
        "Unauthorized", "No bearer token, or an invalid or expired one", "Invalid or expired token"
    ),
    403: ErrorDoc("Forbidden", "The token's role may not do this", "Admin role required"),
    404: ErrorDoc("NotFound", "No such id (or not visible to this principal)", "Task not found: task_abc123"),
    409: ErrorDoc(
        "Conflict", "The current state forbids this change", "Cannot cancel a task that is COMPLETED"
    ),
    413: ErrorDoc("PayloadTooLarge", "Request body over 256 KiB", "Request body is over 256 KiB"),
    429: ErrorDoc(
        "TooManyRequests",
        "Over the rate limit; retry after `Retry-After` seconds",
        "Rate limit of 50 requests per minute exceeded for task creation; retry after 12 s",
    ),
    500: ErrorDoc(
        "InternalError", "An unexpected error (logged with the request id)", "An unexpected error occurred"
    ),
    503: ErrorDoc(
        "Unavailable",
        "Storage is throttled or unreachable; retry after `Retry-After` seconds",
        "Storage is busy, retry shortly",
    ),
}
# The `error` titles, as the one place that maps errors to statuses sets them.
TITLES = {status: title for status, title in STATUS.values()} | {500: "Internal server error"}
RATE_HEADERS = {
    "X-RateLimit-Limit": "Requests allowed in the current 60 s window",
    "X-RateLimit-Remaining": "Requests left in the current window",
    "X-RateLimit-Reset": "When the window ends, epoch seconds",
}


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


DATE_QUERY = Param(
    "date", "Date in YYYY-MM-DD format, UTC (defaults to today)", {"type": "string", "pattern": s.ISO_DATE}
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

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/api/task"): Operation(
        "Create task",
        "Tasks",
        (s.TaskCreated, s.TaskView),
        s.CreateTask,
        example={
            "type": "video-processing",
            "priority": 1,
            "payload": {"video_url": "https://example.com/video.mp4"},
            "capabilities": ["video"],
            "async": True,
        },
        errors=(400, 403, 409, 413),
        headers=(IDEMPOTENCY_HEADER,),
        description="Creates a new task for processing. With `async: false` the reply waits (up to 25 s) "
        "and is the task as it then stands, with its result if it finished. With a `webhook` URL, "
        "the finished task is POSTed there, signed (see the README). 409: the `Idempotency-Key` was "
        "used with another body.",
    ),
    ("GET", "/api/tasks"): Operation(
        "List tasks",
        "Tasks",
        s.TaskList,
        errors=(400, 403),
        query=(TASK_STATUS_QUERY, LIMIT_QUERY, CURSOR_QUERY),
        description="Tasks newest first, a page at a time: every task for an admin, a user's own "
        "tasks otherwise. A page may hold fewer than `limit` tasks while `nextCursor` is set.",
    ),
    ("GET", "/api/task/{id}"): Operation(
        "Get task status",
        "Tasks",
        s.TaskView,
        errors=(400, 404),
        description="Retrieves the current status of a task; while it is PENDING, `queue` says why it"
        " waits (`reason`, `details`) and, when known, its `position` and `estimatedStartAt`.",
    ),
    ("PUT", "/api/task/{id}"): Operation(
        "Update task",
        "Tasks",
        s.TaskView,
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
        s.RetryReply,
        errors=(400, 403, 404, 409),
        description="Retries a FAILED, TIMEOUT or CANCELLED task.",
    ),
    ("POST", "/api/task/{id}/cancel"): Operation(
        "Cancel task",
        "Tasks",
        s.CancelReply,
        errors=(400, 403, 404, 409),
        description="Cancels a PENDING or PROCESSING task.",
    ),
    ("GET", "/api/task/{id}/webhooks"): Operation(
        "Get webhook deliveries",
        "Tasks",
        s.WebhookDeliveries,
        errors=(400, 404),
        description="Every delivery of the finished task to its `webhook` and each attempt: when, the "
        "receiver's status or the error, how long it took, and when the next retry is due. The task's "
        "owner or an admin; anyone else gets 404.",
    ),
    ("POST", "/api/servers"): Operation(
        "Register server",
        "Servers",
        s.ServerRegistered,
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
        "List servers", "Servers", s.ServerList, errors=(400, 403), query=(STATUS_QUERY, GROUP_QUERY)
    ),
    ("POST", "/api/servers/{id}/heartbeat"): Operation(
        "Update server heartbeat",
        "Servers",
        s.HeartbeatReply,
        s.Heartbeat,
        body_required=False,
        example={"status": "healthy", "activeTasks": 3, "metrics": {"cpu": 45, "memory": 60, "gpu": 80}},
        errors=(400, 403, 404, 413),
        description="Updates server heartbeat and health status (admin, or the server's own service token).",
    ),
    ("DELETE", "/api/servers/{id}"): Operation(
        "Unregister server",
        "Servers",
        s.UnregisterReply,
        errors=(400, 403, 404),
        description="Removes a server; its PROCESSING tasks go back to the queue.",
    ),
    ("POST", "/api/servers/{id}/maintenance"): Operation(
        "Set maintenance mode",
        "Servers",
        s.MaintenanceReply,
        s.Maintenance,
        example={"maintenance": True, "reason": "Scheduled maintenance"},
        errors=(400, 403, 404, 413),
        description="Enables or disables maintenance mode: no new tasks; tasks in flight finish.",
    ),
    ("GET", "/api/servers/{id}/metrics"): Operation(
        "Get server metrics", "Servers", s.ServerMetrics, errors=(400, 403, 404)
    ),
    ("POST", "/api/servers/{id}/token"): Operation(
        "Rotate service token",
        "Servers",
        s.ServerRegistered,
        errors=(400, 403, 404),
        description="Issues a new service token for the server (admin). Every earlier token of the "
        "server is refused from this moment, as are those of an earlier registration under the same id.",
    ),
    ("GET", "/api/stats/tasks"): Operation(
        "Get task statistics", "Statistics", s.TaskStats, errors=(400, 403), query=(DATE_QUERY,)
    ),
    ("GET", "/api/stats/hourly"): Operation(
        "Get hourly report", "Statistics", s.HourlyReport, errors=(400, 403), query=(DATE_QUERY,)
    ),
    ("GET", "/api/stats/servers/{id}"): Operation(
        "Get server statistics", "Statistics", s.ServerStats, errors=(400, 403, 404), query=(DATE_QUERY,)
    ),
    ("GET", "/api/stats/queue"): Operation(
        "Get queue summary",
        "Statistics",
        s.QueueSummary,
        errors=(403,),
        description="The backlog by priority, the tasks in flight, the capacity online now, and the"
        " backlog by capability set with why each set waits.",
    ),
    ("GET", "/api/stats/load-balancer"): Operation(
        "Get load balancer status",
        "Load Balancer",
        s.LoadBalancerStatus,
        errors=(403,),
        description="Gets current load distribution and algorithm.",
    ),
    ("POST", "/api/stats/load-balancer/algorithm"): Operation(
        "Set load balancer algorithm",
        "Load Balancer",
        s.AlgorithmReply,
        s.SetAlgorithm,
        example={"algorithm": "least-connections"},
        errors=(400, 403, 413),
        description="Changes the load balancing algorithm (admin only).",
    ),
    ("GET", "/health"): Operation(
        "taskgate's health", "System", s.Health, public=True, description="200 when healthy, 503 when not."
    ),
    ("GET", "/openapi.json"): Operation("This document", "System", dict[str, Any], public=True),
    ("GET", "/docs"): Operation(
        "Interactive documentation (Swagger UI)", "System", str, public=True, media_type="text/html"
    ),
    ("GET", "/dashboard"): Operation(
        "Operations dashboard",
        "System",
        str,
        public=True,
        media_type="text/html",
        description="A page for operators: servers, the queue, today's statistics and the "
        "load-balancing algorithm. It calls this API with a token pasted into it.",
    ),
}


class SpecMismatchError(Exception):
    """The served routes and OPERATIONS disagree."""


def _template(path: str) -> str:
    return re.sub(r"{(\w+)(:\w+)?}", r"{\1}", path)


def served_operations(routes: Sequence[BaseRoute]) -> dict[tuple[str, str], Route]:
    """(method, path template) -> route, for every documented route among `routes`."""
    found: dict[tuple[str, str], Route] = {}
    for route in routes:
        if isinstance(route, WebSocketRoute):
            continue  # OpenAPI does not describe WebSockets
        if not isinstance(route, Route):
            raise SpecMismatchError(f"Cannot document {route!r}: only Route and WebSocketRoute are known")
        if not route.include_in_schema:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            found[(method, _template(route.path))] = route
    return found


def build_spec(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document for `routes`; raises SpecMismatchError if OPERATIONS disagrees."""
    served = served_operations(routes)
    undocumented = sorted(served.keys() - OPERATIONS.keys())
    unserved = sorted(OPERATIONS.keys() - served.keys())
    if undocumented or unserved:
        raise SpecMismatchError(
            f"Routes without an operation: {undocumented}; operations without a route: {unserved}"
        )

    types: list[Any] = [s.ErrorBody]
    for op in OPERATIONS.values():
        types += [*_bodies(op), *([op.request] if op.request else [])]
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(types, refs, strict=True))

    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in OPERATIONS.items():
        paths.setdefault(path, {})[method.lower()] = _operation(served[(method, path)], path, op, schema_of)
    return {
        "openapi": OPENAPI,
        "info": {"title": "taskgate", "version": VERSION, "description": _DESCRIPTION},
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {
                doc.name: _error(status, doc, schema_of[s.ErrorBody]) for status, doc in ERRORS.items()
            },
            "headers": {
                name: {"description": text, "schema": {"type": "integer"}}
                for name, text in RATE_HEADERS.items()
            },
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _bodies(op: Operation) -> tuple[Any, ...]:
    return op.response if isinstance(op.response, tuple) else (op.response,)


def _operation(route: Route, path: str, op: Operation, schema_of: dict[Any, Any]) -> dict[str, Any]:
    bodies = _bodies(op)
    body_schema = schema_of[bodies[0]] if len(bodies) == 1 else {"oneOf": [schema_of[b] for b in bodies]}
    ok: dict[str, Any] = {"description": "OK", "content": {op.media_type: {"schema": body_schema}}}
    statuses = [*op.errors, *(() if op.public else (401, 429)), 500]
    if not op.public:
        ok["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in RATE_HEADERS}
        statuses.append(503)
    responses: dict[str, Any] = {"200": ok}
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status].name}"}
    if op.response is s.Health:  # public, and its 503 carries the health report
        responses["503"] = {
            "description": "Unhealthy",
            "content": {"application/json": {"schema": body_schema}},
        }

    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": _PATH_ID.pattern},
        }
        for name in re.findall(r"{(\w+)}", path)
    ]
    parameters += [
        {"name": p.name, "in": "query", "required": False, "description": p.description, "schema": p.schema}
        for p in op.query
    ]
    parameters += [
        {"name": p.name, "in": "header", "required": False, "description": p.description, "schema": p.schema}
        for p in op.headers
    ]

    operation: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": route.name,
        "security": [] if op.public else [{"bearerAuth": []}],
        "responses": responses,
    }
    if op.description:
        operation["description"] = op.description
    if parameters:
        operation["parameters"] = parameters
    if op.request is not None:
        media: dict[str, Any] = {"schema": schema_of[op.request]}
        if op.example is not None:
            media["example"] = op.example
        operation["requestBody"] = {"required": op.body_required, "content": {"application/json": media}}
    return operation


def _error(status: int, doc: ErrorDoc, schema: dict[str, Any]) -> dict[str, Any]:
    example = {"error": TITLES[status], "details": doc.details}
    response: dict[str, Any] = {
        "description": doc.description,
        "content": {"application/json": {"schema": schema, "example": example}},
    }
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        }
    return response


_DESCRIPTION = """\
A serverless task gateway: clients submit tasks, taskgate routes each to a registered backend
server chosen by a load-balancing algorithm, tracks progress and results, retries and times out.

Every `/api` route takes a JWT (HS256) as `Authorization: Bearer <token>`, with the roles
`admin` (everything), `user` (its own tasks, statistics) or `service` (a backend: its own
heartbeats and the tasks assigned to it). All times are epoch milliseconds, durations
milliseconds, dates `YYYY-MM-DD` in UTC. Every error body is `{"error": ..., "details": ...}`.

Rate limits, per principal and minute: 50 task creations, 10 server registrations, 100 other
requests (backends reporting: 1000). Replies carry `X-RateLimit-Limit`, `X-RateLimit-Remaining`
and `X-RateLimit-Reset`; over the limit, 429 with `Retry-After`.
"""

"""The OpenAPI document, built from the routes being served and the msgspec Structs that
validate requests (and describe replies): no schema is written twice.

`OPERATIONS` says what the routes cannot: summary, tag, bodies, parameters, errors. A served
route without an entry, or an entry without a served route, makes `build_spec` raise, so the
document and the API cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
from starlette.routing import BaseRoute, Route, WebSocketRoute

from core.domain import replies as r
from core.domain.ids import _PATH_ID
from core.services.system import VERSION
from handlers._http import STATUS
from handlers.openapi_operations import OPERATIONS, Operation

__all__ = ["OPERATIONS", "REF", "SpecMismatchError", "build_spec"]

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

    types: list[Any] = [r.ErrorBody]
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
                doc.name: _error(status, doc, schema_of[r.ErrorBody]) for status, doc in ERRORS.items()
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
    if op.status == 302:
        ok = {"description": "Found", "headers": {"Location": {"schema": {"type": "string"}}}}
    statuses = [*op.errors, *(() if op.public else (401, 429)), 500]
    if not op.public:
        ok["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in RATE_HEADERS}
        statuses.append(503)
    responses: dict[str, Any] = {str(op.status): ok}
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status].name}"}
    if op.response is r.Health:  # public, and its 503 carries the health report
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

"""What every route group shares: the app factory, auth and rate limits, body limits, JSON,
and the one place where domain errors become HTTP statuses."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from core import errors
from core.domain import auth
from core.domain.ids import check_path_id
from core.services import ratelimit, servers
from core.services.context import Context

log = logging.getLogger("taskgate.http")

STATUS: dict[type[errors.TaskgateError], tuple[int, str]] = {
    errors.ValidationError: (400, "Invalid request"),
    errors.UnauthorizedError: (401, "Unauthorized"),
    errors.ForbiddenError: (403, "Forbidden"),
    errors.NotFoundError: (404, "Not found"),
    errors.ConflictError: (409, "Conflict"),
    errors.PayloadTooLargeError: (413, "Payload too large"),
    errors.RateLimitedError: (429, "Too many requests"),
    errors.UnavailableError: (503, "Service unavailable"),
}

Endpoint = Callable[[Request], Awaitable[Response]]
ContextSource = Context | Callable[[], Context]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(data), status, headers, media_type="application/json")


def error_response(status: int, error: str, details: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": error, "details": details}, status, headers)


def context(request: Request) -> Context:
    """The app's Context, built on first use (so a Lambda's import stays cheap)."""
    state = request.app.state
    ctx: Context | None = getattr(state, "context", None)
    if ctx is None:
        ctx = state.context = state.context_source()
    return ctx


def principal(request: Request) -> auth.Principal:
    found: auth.Principal = request.state.principal
    return found


def caller(request: Request) -> tuple[Context, auth.Principal]:
    """The Context and the authenticated principal: the first two arguments of every
    service call an endpoint makes."""
    return context(request), principal(request)


def path_id(request: Request, name: str, kind: str) -> str:
    return check_path_id(request.path_params[name], kind)


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 past the limit without reading it all into memory."""
    limit = context(request).config.max_body_bytes
    too_large = errors.PayloadTooLargeError(f"Request body is over {limit // 1024} KiB")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def authenticated(endpoint: Endpoint) -> Endpoint:
    """Verify the bearer token and count the request against the principal's rate limit
    before the endpoint runs; the principal and the rate decision are on request.state, and
    the decision's headers go on every response from here on, errors included."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        ctx = context(request)
        found = auth.verify(ctx.jwt_secret, request.headers.get("authorization"))
        servers.check_service_token(ctx, found)
        request.state.principal = found
        route = request.scope.get("route")
        bucket = ratelimit.bucket_for(request.method, getattr(route, "path", request.url.path), found)
        try:
            request.state.rate_limit = ratelimit.check(ctx, found, bucket)
        except ratelimit.RateLimitExceededError as exc:
            request.state.rate_limit = exc.decision
            raise
        response = await endpoint(request)
        response.headers.update(_rate_headers(request))
        return response

    return wrapper


def _rate_headers(request: Request) -> dict[str, str]:
    decision: ratelimit.RateDecision | None = getattr(request.state, "rate_limit", None)
    return {} if decision is None else decision.headers()


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.TaskgateError)
    for kind in type(exc).__mro__:
        if kind in STATUS:
            status, title = STATUS[kind]
            break
    else:
        return await _unexpected(request, exc)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.RateLimitedError | errors.UnavailableError):
        headers["Retry-After"] = str(exc.retry_after_s)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="taskgate"'
    return error_response(status, title, exc.details, headers | _rate_headers(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = _rate_headers(request)
    if exc.status_code == 404:
        return error_response(404, "Not found", f"No route for {request.method} {request.url.path}", headers)
    if exc.status_code == 405:
        return error_response(
            405,
            "Method not allowed",
            f"{request.method} is not allowed on {request.url.path}",
            dict(exc.headers or {}) | headers | {"Allow": _allowed_methods(request)},
        )
    return error_response(exc.status_code, "HTTP error", str(exc.detail), headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette's 405 names only the first
    route's (GET /api/task/{id} hid PUT)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return ", ".join(sorted(methods))


async def _unexpected(request: Request, exc: Exception) -> Response:
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    log.error(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"request_id": request_id},
    )
    return error_response(
        500,
        "Internal server error",
        "An unexpected error occurred",
        {"X-Request-Id": request_id} | _rate_headers(request),
    )


class CatchAll:
    """Turns any exception a route did not map into the documented 500 body, logged with a
    request id (Starlette's own server-error handler would re-raise it into Mangum)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            response = await _unexpected(Request(scope), exc)
            await response(scope, receive, send)


def aws_context() -> Context:
    """The Context of an HTTP Lambda function, built on its first request."""
    from handlers._lambda import build_http_context

    return build_http_context()


LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_handler(app: Starlette) -> LambdaHandler:
    """The app's Lambda entry point (API Gateway HTTP API, payload 2.0). Mangum and Powertools
    load on the first invocation: the one-machine deployment imports these modules for their
    routes and never needs either."""
    built: LambdaHandler | None = None

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal built
        if built is None:
            from handlers._lambda import http_handler

            built = http_handler(app)
        return built(event, context)

    return handler


def create_app(routes: Sequence[BaseRoute], context_source: ContextSource) -> Starlette:
    """A Starlette app for `routes`, whose endpoints get their Context from `context_source`
    (a Context, or a factory called once on the first request)."""
    app = Starlette(
        routes=list(routes),
        exception_handlers={errors.TaskgateError: _domain_error, HTTPException: _http_error},
        middleware=[Middleware(CatchAll)],
    )
    if isinstance(context_source, Context):
        app.state.context = context_source
    else:
        app.state.context = None
        app.state.context_source = context_source
    return app


def lambda_app(routes: Sequence[BaseRoute]) -> tuple[Starlette, LambdaHandler]:
    """One HTTP Lambda function: the app for `routes`, its Context built on the first request,
    and the app's entry point."""
    app = create_app(routes, aws_context)
    return app, lambda_handler(app)

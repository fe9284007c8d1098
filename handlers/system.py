"""taskgate's own health: public, no token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.services import system
from handlers._http import context, json_response, lambda_app


async def health(request: Request) -> Response:
    report = system.health(context(request))
    return json_response(report, 200 if report["status"] == "healthy" else 503)


routes = [Route("/health", health, methods=["GET"])]

app, handler = lambda_app(routes)

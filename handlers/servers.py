"""Server routes: register, list, heartbeat, unregister, maintenance, metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.domain.schemas import Heartbeat, Maintenance, RegisterServer, decode
from core.services import servers
from handlers._http import authenticated, caller, json_response, lambda_app, path_id, read_body


@authenticated
async def register_server(request: Request) -> Response:
    body = decode(await read_body(request), RegisterServer)
    server, token = servers.register_server(*caller(request), body)
    return json_response({"serverId": server.id, "message": "Server registered successfully", "token": token})


@authenticated
async def rotate_token(request: Request) -> Response:
    server_id = path_id(request, "id", "server")
    server, token = servers.rotate_token(*caller(request), server_id)
    return json_response({"serverId": server.id, "message": "Service token rotated", "token": token})


@authenticated
async def list_servers(request: Request) -> Response:
    ctx, who = caller(request)
    found = servers.list_servers(
        ctx,
        who,
        status=request.query_params.get("status"),
        group=request.query_params.get("group"),
    )
    now = ctx.now()
    return json_response({"servers": [server.to_api(now) for server in found]})


@authenticated
async def heartbeat(request: Request) -> Response:
    server_id = path_id(request, "id", "server")
    body = decode(await read_body(request) or b"{}", Heartbeat)
    server = servers.heartbeat(*caller(request), server_id, body)
    return json_response(
        {"message": "Heartbeat updated", "serverId": server.id, "status": server.status.value}
    )


@authenticated
async def unregister_server(request: Request) -> Response:
    server = servers.unregister_server(*caller(request), path_id(request, "id", "server"))
    return json_response({"message": "Server unregistered", "serverId": server.id})


@authenticated
async def set_maintenance(request: Request) -> Response:
    server_id = path_id(request, "id", "server")
    body = decode(await read_body(request), Maintenance)
    server = servers.set_maintenance(*caller(request), server_id, body)
    return json_response(
        {
            "message": "Maintenance mode enabled" if body.maintenance else "Maintenance mode disabled",
            "serverId": server.id,
            "status": server.status.value,
            "maintenanceReason": server.maintenance_reason,
        }
    )


@authenticated
async def server_metrics(request: Request) -> Response:
    return json_response(servers.server_metrics(*caller(request), path_id(request, "id", "server")))


routes = [
    Route("/api/servers", register_server, methods=["POST"]),
    Route("/api/servers", list_servers, methods=["GET"]),
    Route("/api/servers/{id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/api/servers/{id}", unregister_server, methods=["DELETE"]),
    Route("/api/servers/{id}/maintenance", set_maintenance, methods=["POST"]),
    Route("/api/servers/{id}/metrics", server_metrics, methods=["GET"]),
    Route("/api/servers/{id}/token", rotate_token, methods=["POST"]),
]

app, handler = lambda_app(routes)

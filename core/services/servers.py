"""Server services: registration, listing, heartbeats, maintenance, metrics, removal."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from core.domain import auth, health, outlier
from core.domain.auth import Principal
from core.domain.ids import new_server_id
from core.domain.models import Endpoints, Server, ServerStatus
from core.domain.schemas import Heartbeat, Maintenance, RegisterServer
from core.domain.urls import check_url
from core.errors import ConflictError, NotFoundError, StaleWriteError, UnauthorizedError, ValidationError
from core.services import stats, tasks
from core.services.context import Context

log = logging.getLogger(__name__)

SERVICE_TOKEN_TTL_S = 365 * 86_400
_CAS_ROUNDS = 8


def register_server(ctx: Context, principal: Principal, body: RegisterServer) -> tuple[Server, str]:
    """Store a new server; returns it with a service token for its heartbeats."""
    auth.require_admin(principal)
    endpoints = Endpoints(
        predict=check_url(body.endpoints.predict, "endpoints.predict"),
        health=check_url(body.endpoints.health, "endpoints.health"),
        metrics=body.endpoints.metrics and check_url(body.endpoints.metrics, "endpoints.metrics"),
        cancel=body.endpoints.cancel and check_url(body.endpoints.cancel, "endpoints.cancel"),
    )
    server = Server(
        id=body.id or new_server_id(),
        name=body.name,
        endpoints=endpoints,
        api_key=body.api_key,
        max_concurrent=body.max_concurrent,
        capabilities=sorted(set(body.capabilities)),
        groups=sorted(set(body.groups)),
        priority=body.priority,
        registered_at=ctx.now(),
        token_id=new_token_id(),
    )
    try:
        ctx.store.put_server(server)
    except StaleWriteError:
        raise ConflictError(f"Server already registered: {server.id}") from None
    ctx.fleet.invalidate()
    ctx.queue.check_server(server.id)
    ctx.queue.capacity_changed()
    return server, service_token(ctx, server)


def new_token_id() -> str:
    return secrets.token_urlsafe(12)


def service_token(ctx: Context, server: Server) -> str:
    """The server's token for heartbeats and callbacks, bound to this registration."""
    return auth.mint(
        ctx.jwt_secret,
        sub=f"server:{server.id}",
        roles=[auth.SERVICE],
        ttl_s=SERVICE_TOKEN_TTL_S,
        server_id=server.id,
        tid=server.token_id,
    )


def rotate_token(ctx: Context, principal: Principal, server_id: str) -> tuple[Server, str]:
    """A new service token for the server; every earlier one is refused from now on."""
    auth.require_admin(principal)
    server = update_server(ctx, get_server(ctx, server_id), lambda _: {"token_id": new_token_id()})
    return server, service_token(ctx, server)


def check_service_token(ctx: Context, principal: Principal) -> None:
    """A server's own token is good only while its registration stands: not after DELETE,
    re-registration under the same id, or a rotation (one read of the server)."""
    if principal.is_server_token and not auth.is_current_registration(
        principal, ctx.store.get_server(principal.server_id or "")
    ):
        raise UnauthorizedError(auth.REVOKED)


def list_servers(
    ctx: Context, principal: Principal, *, status: str | None = None, group: str | None = None
) -> list[Server]:
    auth.require_admin(principal)
    wanted: ServerStatus | None = None
    if status is not None:
        try:
            wanted = ServerStatus(status)
        except ValueError:
            choices = ", ".join(s.value for s in ServerStatus)
            raise ValidationError(f"Invalid query parameter status: must be one of {choices}") from None
    return [
        s
        for s in ctx.store.list_servers()
        if (wanted is None or s.status is wanted) and (group is None or group in s.groups)
    ]


def get_server(ctx: Context, server_id: str) -> Server:
    server = ctx.store.get_server(server_id)
    if server is None:
        raise NotFoundError(f"Server not found: {server_id}")
    return server


def server_metrics(ctx: Context, principal: Principal, server_id: str) -> dict[str, Any]:
    auth.require_admin(principal)
    return get_server(ctx, server_id).metrics_api(ctx.now())


def heartbeat(ctx: Context, principal: Principal, server_id: str, body: Heartbeat) -> Server:
    auth.require_any(principal, auth.ADMIN, auth.SERVICE)
    server = get_server(ctx, server_id)
    auth.check_server_access(principal, server)
    stats.record_health(ctx.store, server_id, body.status == "healthy", ctx.now())
    reported = dict(body.metrics)
    if body.active_tasks is not None:
        reported["activeTasks"] = body.active_tasks

    def changes(current: Server) -> dict[str, Any]:
        now = ctx.now()
        return {
            **health.observe(current, body.status == "healthy", now, heartbeat=True),
            "reported": reported,
        }

    return update_server(ctx, server, changes)


def record_check(ctx: Context, server_id: str, healthy: bool) -> Server | None:
    """An active health check's result (None if the server was unregistered meanwhile)."""

    ended: list[bool] = []  # whether the write that won ended an ejection

    def changes(current: Server) -> dict[str, Any]:
        now = ctx.now()
        observed = health.observe(current, healthy, now, heartbeat=False)
        ended[:] = [healthy and outlier.is_ejected(current, now)]
        if ended[0]:
            # As Envoy does: a passed active check ends an ejection, into a slow start.
            observed |= {"ejected_until": now, "slow_start_from": now}
        return observed

    server = ctx.store.get_server(server_id)
    if server is None:
        return None
    stats.record_health(ctx.store, server_id, healthy, ctx.now())
    try:
        checked = update_server(ctx, server, changes)
    except NotFoundError:
        return None
    if ended and ended[0]:
        ctx.queue.capacity_changed()  # back in selection: waiting tasks may go there now
    return checked


def mark_silent(ctx: Context, server: Server) -> Server | None:
    """No sign of life for HEARTBEAT_TIMEOUT: offline (its tasks go back to the queue)."""

    def changes(current: Server) -> dict[str, Any]:
        if current.status in (ServerStatus.OFFLINE, ServerStatus.MAINTENANCE):
            return {}
        return {"status": ServerStatus.OFFLINE, "health_status": "unhealthy"}

    try:
        return update_server(ctx, server, changes)
    except NotFoundError:
        return None


def set_maintenance(ctx: Context, principal: Principal, server_id: str, body: Maintenance) -> Server:
    auth.require_admin(principal)

    def changes(current: Server) -> dict[str, Any]:
        if body.maintenance:
            return {"status": ServerStatus.MAINTENANCE, "maintenance_reason": body.reason}
        return {"status": health.status_after_maintenance(current), "maintenance_reason": None}

    return update_server(ctx, get_server(ctx, server_id), changes)


def update_server(ctx: Context, server: Server, changes: Callable[[Server], dict[str, Any]]) -> Server:
    """Read-modify-write with the server's version as the lock; reacts to status changes."""
    for _ in range(_CAS_ROUNDS):
        try:
            updated = ctx.store.update_server(server.id, changes(server), version=server.version)
        except StaleWriteError as exc:
            if not isinstance(exc.current, Server):
                raise NotFoundError(f"Server not found: {server.id}") from None
            server = exc.current
            continue
        ctx.fleet.invalidate()
        _status_changed(ctx, server, updated)
        return updated
    raise ConflictError("Server changed while updating; try again")


def unregister_server(ctx: Context, principal: Principal, server_id: str) -> Server:
    auth.require_admin(principal)
    server = ctx.store.delete_server(server_id)
    if server is None:
        raise NotFoundError(f"Server not found: {server_id}")
    ctx.fleet.invalidate()
    # A crash here leaves tasks PROCESSING on a server that is gone; the sweeper requeues them.
    requeue_server_tasks(ctx, server_id, f"Server {server_id} was unregistered")
    return server


def _status_changed(ctx: Context, before: Server, after: Server) -> None:
    if before.status is after.status:
        return
    if after.status is ServerStatus.OFFLINE:
        requeue_server_tasks(ctx, after.id, f"Server {after.id} went offline")
    if after.status is ServerStatus.ONLINE:
        ctx.queue.capacity_changed()


def requeue_server_tasks(ctx: Context, server_id: str, reason: str) -> int:
    """Give a lost server's PROCESSING tasks back to the queue (a failed attempt each)."""
    count = 0
    for task in ctx.store.processing_on_server(server_id):
        try:
            tasks.requeue(ctx, task, reason)
            count += 1
        except StaleWriteError:
            continue  # finished or moved meanwhile
    return count

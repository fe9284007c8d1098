"""The auth matrix's rows and columns: every route (with a fresh target for each call, so no
call depends on another) and every kind of caller, honest or not."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from core.domain import auth
from core.domain.models import TaskStatus
from tests.e2e.harness import EXAMPLE_SERVER, HELD, SECRET, Api, unique

OWNER = "matrix-owner"
# Every server here is registered with it; no response or log line may ever show it.
API_KEY = "matrix-api-key-never-shown-0f9c2e"
ADMIN_CLAIMS = {"sub": "mallory", "roles": ["admin"]}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@dataclass
class Target:
    """What one call acts on: a task of OWNER and the server it runs on, and another server."""

    task_id: str
    server_id: str
    other_server_id: str


# -- columns: who calls ------------------------------------------------------------------------

Caller = Callable[[Api, Target], str | None]

CALLERS: dict[str, Caller] = {
    "no token": lambda api, t: None,
    "garbage": lambda api, t: "not.a-jwt",
    "wrong key": lambda api, t: jwt.encode(
        {**ADMIN_CLAIMS, "exp": int(time.time()) + 600}, "another-secret-" * 4, "HS256"
    ),
    "expired": lambda api, t: auth.mint(
        SECRET, sub="mallory", roles=["admin"], ttl_s=60, now_s=time.time() - 3600
    ),
    "alg none": lambda api, t: (
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**ADMIN_CLAIMS, 'exp': int(time.time()) + 600})}."
    ),
    "no exp": lambda api, t: jwt.encode(ADMIN_CLAIMS, SECRET, "HS256"),
    "user": lambda api, t: api.token("user", OWNER),
    "another user": lambda api, t: api.token("user", unique("stranger")),
    "service, other server": lambda api, t: api.service(t.other_server_id),
    "service, own server": lambda api, t: api.service(t.server_id),
    "admin": lambda api, t: api.admin,
}

# -- rows: what is called ----------------------------------------------------------------------


def processing(api: Api) -> Target:
    server_id = api.register_server(apiKey=API_KEY)["serverId"]
    task_id = api.create_task(api.token("user", OWNER))
    api.start_processing(task_id, server_id)
    return Target(task_id, server_id, api.register_server(apiKey=API_KEY)["serverId"])


def pending(api: Api) -> Target:
    target = processing(api)
    api.end_attempt(target.task_id)  # back to PENDING, off the server
    return target


def cancelled(api: Api) -> Target:
    target = pending(api)
    api.store.update_task(target.task_id, {"status": TaskStatus.CANCELLED}, from_status={TaskStatus.PENDING})
    return target


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {task} and {server} are filled from the Target
    setup: Callable[[Api], Target] = processing
    body: Callable[[], Any] | None = None


def _server_body() -> dict[str, Any]:
    return {
        **EXAMPLE_SERVER,
        "id": unique("srv"),
        "endpoints": {"predict": "http://127.0.0.1:9/p", "health": "http://127.0.0.1:9/h"},
    }


ROUTES: list[Route] = [
    Route(
        "POST",
        "/api/task",
        body=lambda: {"type": "matrix", "priority": 1, "payload": {}, "capabilities": [HELD]},
    ),
    Route("GET", "/api/tasks"),
    Route("GET", "/api/task/{task}"),
    Route("PUT", "/api/task/{task}", body=lambda: {"status": "PROCESSING", "progress": 10}),
    Route("POST", "/api/task/{task}/retry", setup=cancelled),
    Route("POST", "/api/task/{task}/cancel", setup=pending),
    Route("GET", "/api/task/{task}/webhooks"),
    Route("POST", "/api/task/{task}/output", body=lambda: {"data": {"line": "matrix"}}),
    # Finished: on one machine a running task's stream stays open until it ends.
    Route("GET", "/api/task/{task}/stream", setup=cancelled),
    Route("POST", "/api/servers", body=_server_body),
    Route("GET", "/api/servers"),
    Route("DELETE", "/api/servers/{server}"),
    Route(
        "POST", "/api/servers/{server}/maintenance", body=lambda: {"maintenance": True, "reason": "matrix"}
    ),
    Route("GET", "/api/servers/{server}/metrics"),
    Route("POST", "/api/servers/{server}/heartbeat", body=lambda: {"status": "healthy", "activeTasks": 1}),
    Route("POST", "/api/servers/{server}/token"),
    Route("GET", "/api/stats/tasks"),
    Route("GET", "/api/stats/hourly"),
    Route("GET", "/api/stats/servers/{server}"),
    Route("GET", "/api/stats/queue"),
    Route("GET", "/api/stats/load-balancer"),
    Route("GET", "/api/overview"),
    Route("POST", "/api/stats/load-balancer/algorithm", body=lambda: {"algorithm": "least-connections"}),
    Route("GET", "/health"),
    Route("GET", "/openapi.json"),
    Route("GET", "/docs"),
]


def label(route: Route) -> str:
    return f"{route.method} {route.path.replace('{task}', ':id').replace('{server}', ':id')}"

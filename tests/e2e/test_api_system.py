"""Authentication on every route, the public health route, and unknown routes."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import jwt
import pytest

from .harness import EXAMPLE_HEARTBEAT, EXAMPLE_SERVER, EXAMPLE_TASK, Api, unique


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": unique("mallory"), "roles": ["admin"], "iat": now, "exp": now + 3600, **extra}


BAD_TOKENS: dict[str, Callable[[Api], str]] = {
    "garbage": lambda api: "not-a-jwt",
    "three-garbage-parts": lambda api: "abc.def.ghi",
    "wrong-secret": lambda api: jwt.encode(_claims(), "another-secret-" + "y" * 32, algorithm="HS256"),
    "expired": lambda api: jwt.encode(_claims(exp=int(time.time()) - 60), api.secret, algorithm="HS256"),
    "not-yet-valid": lambda api: jwt.encode(
        _claims(nbf=int(time.time()) + 600), api.secret, algorithm="HS256"
    ),
    "issued-in-the-future": lambda api: jwt.encode(
        _claims(iat=int(time.time()) + 600), api.secret, algorithm="HS256"
    ),
    "iat-not-a-number": lambda api: jwt.encode(_claims(iat="yesterday"), api.secret, algorithm="HS256"),
    "alg-none": lambda api: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
    "alg-none-signed": lambda api: (
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
        + jwt.encode(_claims(), api.secret, algorithm="HS256").rsplit(".", 1)[1]
    ),
    "alg-hs512": lambda api: jwt.encode(_claims(), api.secret, algorithm="HS512"),
    "no-exp": lambda api: jwt.encode(
        {k: v for k, v in _claims().items() if k != "exp"}, api.secret, algorithm="HS256"
    ),
    "no-sub": lambda api: jwt.encode(
        {k: v for k, v in _claims().items() if k != "sub"}, api.secret, algorithm="HS256"
    ),
    "unknown-role": lambda api: jwt.encode(_claims(roles=["superuser"]), api.secret, algorithm="HS256"),
    "roles-not-a-list": lambda api: jwt.encode(_claims(roles="admin"), api.secret, algorithm="HS256"),
    "no-roles": lambda api: jwt.encode(_claims(roles=[]), api.secret, algorithm="HS256"),
    # Was a 500: a list inside the list is unhashable (security review, finding 5).
    "roles-nested": lambda api: jwt.encode(_claims(roles=[["admin"]]), api.secret, algorithm="HS256"),
    "service-without-server": lambda api: jwt.encode(
        _claims(roles=["service"]), api.secret, algorithm="HS256"
    ),
    "tampered": lambda api: _tamper(api.token("user")),
}


def _tamper(token: str) -> str:
    """The user's signature on a payload that claims admin."""
    header, _, signature = token.split(".")
    return f"{header}.{_b64(_claims())}.{signature}"


# Every authenticated route, with a body it would accept.
ROUTES: list[tuple[str, str, object]] = [
    ("POST", "/api/task", EXAMPLE_TASK),
    ("GET", "/api/task/task_abc123", None),
    ("PUT", "/api/task/task_abc123", {"progress": 1}),
    ("POST", "/api/task/task_abc123/retry", None),
    ("POST", "/api/task/task_abc123/cancel", None),
    ("POST", "/api/servers", EXAMPLE_SERVER),
    ("GET", "/api/servers", None),
    ("POST", "/api/servers/srv-abc/heartbeat", EXAMPLE_HEARTBEAT),
    ("DELETE", "/api/servers/srv-abc", None),
    ("POST", "/api/servers/srv-abc/maintenance", {"maintenance": True}),
    ("GET", "/api/servers/srv-abc/metrics", None),
]


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_a_bad_token_is_401_and_creates_nothing(api: Api, kind: str) -> None:
    token = BAD_TOKENS[kind](api)
    server_id = unique("srv")

    api.post("/api/task", json=EXAMPLE_TASK, token=token).error(401, "Unauthorized")
    api.post("/api/servers", json={**EXAMPLE_SERVER, "id": server_id}, token=token).error(401, "Unauthorized")

    assert server_id not in api.servers()


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_api_route_needs_a_token(api: Api, method: str, path: str, body: object) -> None:
    kwargs = {} if body is None else {"json": body}
    api.request(method, path, **kwargs).error(401, "Unauthorized")


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Basic dXNlcjpwYXNz", "Token abc", "bearer-without-space"],
    ids=["empty", "bearer-only", "basic", "other-scheme", "no-scheme"],
)
def test_a_malformed_authorization_header_is_401(api: Api, header: str) -> None:
    reply = api.post("/api/task", json=EXAMPLE_TASK, headers={"Authorization": header})
    reply.error(401, "Unauthorized")


def test_an_expired_token_that_was_once_good_is_401(api: Api) -> None:
    good = api.token("user", "alice-" + unique("u"), ttl_s=3600)
    expired = jwt.encode(
        {**jwt.decode(good, options={"verify_signature": False}), "exp": int(time.time()) - 1},
        api.secret,
        algorithm="HS256",
    )
    api.post("/api/task", json=EXAMPLE_TASK, token=good).ok()
    api.post("/api/task", json=EXAMPLE_TASK, token=expired).error(401, "Unauthorized")


def test_auth_comes_before_validation(api: Api) -> None:
    """A caller without a token learns nothing about what the body should look like."""
    api.post("/api/task", json={"nonsense": True}).error(401, "Unauthorized")
    api.get("/api/task/bad!id").error(401, "Unauthorized")


def test_health_is_public(api: Api) -> None:
    reply = api.get("/health")
    body = reply.ok()
    assert body["status"] == "healthy"


def test_health_ignores_a_bad_token(api: Api) -> None:
    assert api.get("/health", token="garbage").ok()["status"] == "healthy"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("GET", "/api/taskz"), ("POST", "/api/task/x/y/z"), ("GET", "/api/servers/x/y")],
)
def test_an_unknown_route_is_404_in_the_error_shape(api: Api, method: str, path: str) -> None:
    api.request(method, path, token=api.admin).error(404, "Not found")


def test_a_wrong_method_is_an_error_in_the_error_shape(api: Api) -> None:
    reply = api.request("PATCH", "/api/task", token=api.admin)
    assert reply.status_code in (404, 405)  # the shape is checked for every error reply


def test_the_reference_sdk_flow(api: Api) -> None:
    """The reference's Python example: create, then read back by id."""
    token = api.user()
    task = api.post(
        "/api/task",
        json={
            "type": "video-processing",
            "priority": 1,
            "payload": {"video_url": "https://example.com/video.mp4"},
        },
        token=token,
        headers={"Content-Type": "application/json"},
    ).ok()
    assert api.get(f"/api/task/{task['id']}", token=token).ok()["status"] == "PENDING"

"""/openapi.json: a valid OpenAPI document, describing exactly the routes served, with the very
schemas that validate requests, and replies that are what the app really sends."""

from __future__ import annotations

import ast
import datetime
import inspect
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from openapi_spec_validator import validate as validate_openapi
from starlette.routing import Route
from starlette.testclient import TestClient

from core.domain import auth, schemas
from core.domain.ids import now_ms
from core.domain.models import TaskStatus
from core.errors import ValidationError
from core.services.context import Context
from handlers import docs
from handlers._http import create_app
from handlers.local import app as local
from handlers.openapi import OPERATIONS, REF, SpecMismatchError, build_spec
from tests.e2e.harness import EXAMPLE_COMPLETED, EXAMPLE_HEARTBEAT, EXAMPLE_SERVER, EXAMPLE_TASK

TAGS = {"Tasks", "Servers", "Statistics", "Load Balancer", "System"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return build_spec(local.ROUTES)


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


def schema_validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for `schema`, whose $refs resolve in the document's components."""
    return jsonschema.Draft202012Validator({**schema, "components": spec["components"]})


def served() -> dict[tuple[str, str], Route]:
    """(method, path template) for every route the one-machine app serves, as the test sees it."""
    found = {}
    for route in local.ROUTES:
        assert isinstance(route, Route), route
        if route.include_in_schema:
            for method in route.methods or ():
                if method != "HEAD":
                    found[(method, re.sub(r"{(\w+):\w+}", r"{\1}", route.path))] = route
    return found


def decoded_struct(route: Route) -> type[schemas.Request] | None:
    """The Struct the endpoint passes to `core.domain.schemas.decode`, read from its source."""
    endpoint = inspect.unwrap(route.endpoint)
    tree = ast.parse(textwrap.dedent(inspect.getsource(endpoint)))
    names = {
        call.args[1].id
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "decode"
        and isinstance(call.args[1], ast.Name)
    }
    assert len(names) <= 1, (route.path, names)
    return endpoint.__globals__[names.pop()] if names else None


# -- the document ---------------------------------------------------------------------------


def test_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate_openapi(spec)
    assert spec["openapi"].startswith("3.1")


def test_documents_exactly_the_served_routes(spec: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in operations(spec)}
    assert documented == set(served())
    # The docs pages are documented; Swagger UI's asset files are not part of the API.
    assert {("GET", "/openapi.json"), ("GET", "/docs")} <= documented
    assert not any(path.startswith("/docs/assets") for _, path in documented)


def test_a_route_without_an_operation_or_an_operation_without_a_route_is_refused() -> None:
    async def endpoint(request: Any) -> Any: ...

    with pytest.raises(SpecMismatchError, match="/api/extra"):
        build_spec([*local.ROUTES, Route("/api/extra", endpoint, methods=["GET"])])
    with pytest.raises(SpecMismatchError, match="/health"):
        build_spec([route for route in local.ROUTES if getattr(route, "path", "") != "/health"])
    assert set(OPERATIONS) == set(served())


def test_every_operation_has_a_tag_a_200_schema_and_its_errors(spec: dict[str, Any]) -> None:
    errors = spec["components"]["responses"]
    for name, response in errors.items():
        assert response["content"]["application/json"]["schema"] == {"$ref": REF.format(name="ErrorBody")}, (
            name
        )
    for method, path, operation in operations(spec):
        where = f"{method} {path}"
        assert len(operation["tags"]) == 1 and operation["tags"][0] in TAGS, where
        assert operation["summary"], where
        responses = operation["responses"]
        if "302" in responses:  # GET /: a redirect, with no body
            assert responses["302"]["headers"]["Location"], where
        else:
            (media,) = responses["200"]["content"].values()
            assert media["schema"], where
        statuses = {int(status) for status in responses}
        assert 500 in statuses, where
        for status in statuses - {200, 302}:
            if not (path == "/health" and status == 503):
                assert responses[str(status)]["$ref"].startswith("#/components/responses/"), where
        if operation["security"]:
            assert operation["security"] == [{"bearerAuth": []}], where
            assert {401, 429, 503} <= statuses, where
        else:
            assert path in ("/", "/health", "/docs", "/openapi.json", "/dashboard"), where
            assert not {401, 403, 429} & statuses, where
        if "requestBody" in operation:
            assert {400, 413} <= statuses, where
        if "{id}" in path:
            assert {400, 404} <= statuses, where
        if path.startswith("/api/servers") or path.endswith("/algorithm"):
            assert 403 in statuses, where  # admin only (or the server's own token)


def test_public_routes_are_exactly_the_ones_design_names(spec: dict[str, Any]) -> None:
    public = {(method, path) for method, path, operation in operations(spec) if operation["security"] == []}
    # The dashboard page holds no data: its script calls the API with the operator's token.
    assert public == {
        ("GET", "/"),
        ("GET", "/health"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/dashboard"),
    }
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


def test_request_schemas_are_msgspecs_for_the_structs_that_decode_uses(spec: dict[str, Any]) -> None:
    routes = served()
    components = spec["components"]["schemas"]
    seen = set()
    for method, path, operation in operations(spec):
        struct = decoded_struct(routes[(method, path)])
        if struct is None:
            assert "requestBody" not in operation, f"{method} {path} documents a body it never reads"
            continue
        seen.add(struct)
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": REF.format(name=struct.__name__)}, f"{method} {path}"
        _, own = msgspec.json.schema_components([struct], ref_template=REF)
        for name, definition in own.items():
            assert components[name] == definition, name
    assert {
        schemas.CreateTask,
        schemas.UpdateTask,
        schemas.RegisterServer,
        schemas.Heartbeat,
        schemas.Maintenance,
    } <= seen


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("CreateTask", EXAMPLE_TASK),
        ("RegisterServer", EXAMPLE_SERVER),
        ("UpdateTask", EXAMPLE_COMPLETED),
        ("Heartbeat", EXAMPLE_HEARTBEAT),
        ("Maintenance", {"maintenance": True, "reason": "Scheduled maintenance"}),
    ],
)
def test_the_references_request_bodies_validate(
    spec: dict[str, Any], name: str, body: dict[str, Any]
) -> None:
    validator = schema_validator(spec, {"$ref": REF.format(name=name)})
    validator.validate(body)
    # The document and the decoder agree: what one refuses, so does the other.
    struct = getattr(schemas, name)
    schemas.decode(msgspec.json.encode(body), struct)
    for wrong in ({**body, "colour": "red"}, {**body, "priority": "high"} if "priority" in body else None):
        if wrong is None:
            continue
        assert not validator.is_valid(wrong), wrong
        with pytest.raises(ValidationError):
            schemas.decode(msgspec.json.encode(wrong), struct)


def test_a_body_with_a_missing_field_does_not_validate(spec: dict[str, Any]) -> None:
    validator = schema_validator(spec, {"$ref": REF.format(name="CreateTask")})
    assert not validator.is_valid({k: v for k, v in EXAMPLE_TASK.items() if k != "priority"})
    assert not validator.is_valid({**EXAMPLE_TASK, "priority": 11})


def test_every_example_in_the_document_fits_its_schema(spec: dict[str, Any]) -> None:
    responses = list(spec["components"]["responses"].values())
    bodies = [op["requestBody"] for _, _, op in operations(spec) if "requestBody" in op]
    for holder in [*responses, *bodies]:
        media = holder["content"]["application/json"]
        if "example" in media:
            schema_validator(spec, media["schema"]).validate(media["example"])


def test_the_document_is_built_once_and_served(tmp_path: Path) -> None:
    assert docs.document() is docs.document()
    app = create_app(local.ROUTES, local.build_context(str(tmp_path / "t.db")))
    with TestClient(app) as client:
        reply = client.get("/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == msgspec.json.decode(msgspec.json.encode(build_spec(local.ROUTES)))


# -- what is really served ------------------------------------------------------------------


class Checked:
    """A client that checks every reply against the document: a 200 against the operation's
    200 schema, an error against its documented error response."""

    def __init__(self, client: TestClient, spec: dict[str, Any], ctx: Context) -> None:
        self.client = client
        self.spec = spec
        self.ctx = ctx
        secret = ctx.config.jwt_secret
        self.tokens = {
            "admin": auth.mint(secret, sub="admin-openapi", roles=[auth.ADMIN], ttl_s=600),
            "user": auth.mint(secret, sub="user-openapi", roles=[auth.USER], ttl_s=600),
        }
        self.covered: set[tuple[str, str]] = set()

    def __call__(
        self,
        method: str,
        template: str,
        *,
        token: str | None = "admin",
        json: Any = None,
        expect: int = 200,
        headers: dict[str, str] | None = None,
        **ids: str,
    ) -> Any:
        path = template.format(**ids) if ids else template
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens[token]}"
        reply = self.client.request(method, path, headers=headers, json=json)
        assert reply.status_code == expect, f"{method} {path}: {reply.status_code} {reply.text}"
        path_template = re.sub(r"\?.*", "", template)
        operation = self.spec["paths"][path_template][method.lower()]
        documented = operation["responses"].get(str(reply.status_code))
        assert documented is not None, f"{method} {path}: {reply.status_code} is not documented: {reply.text}"
        if "$ref" in documented:
            documented = self.spec["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
        ((media_type, media),) = documented["content"].items()
        assert reply.headers["content-type"].split(";")[0] == media_type, f"{method} {path}"
        body = reply.json() if media_type == "application/json" else reply.text
        errors = sorted(schema_validator(self.spec, media["schema"]).iter_errors(body), key=str)
        assert not errors, f"{method} {path} -> {reply.status_code}: {body}\n" + "\n".join(map(str, errors))
        if reply.status_code == 200:
            self.covered.add((method, path_template))
        return body


@pytest.fixture
def checked(tmp_path: Path, spec: dict[str, Any]) -> Iterator[Checked]:
    # A short wait for `async: false`: its task is held, so the reply is the task as it stands.
    ctx = local.build_context(str(tmp_path / "t.db"), sync_wait_ms=50)
    # The routes alone, without the dispatcher and sweeper of build_app: nothing calls out to
    # the (unreachable) endpoints registered here, and no task moves unless the test moves it.
    with TestClient(create_app(local.ROUTES, ctx), raise_server_exceptions=False) as client:
        yield Checked(client, spec, ctx)
    ctx.store.close()


def test_every_route_replies_as_documented(checked: Checked, spec: dict[str, Any]) -> None:
    call = checked
    assert call("GET", "/health", token=None)["status"] == "healthy"
    call("GET", "/openapi.json", token=None)
    assert "swagger-ui" in call("GET", "/docs", token=None)
    assert "dashboard/assets/app.js" in call("GET", "/dashboard", token=None)
    root = checked.client.get("/", follow_redirects=False)
    assert (root.status_code, root.headers["location"]) == (302, "dashboard")
    checked.covered.add(("GET", "/"))

    # Servers. The endpoints are never called: no dispatcher or health check runs here.
    dead = "http://127.0.0.1:9"
    server = {**EXAMPLE_SERVER, "endpoints": {n: f"{dead}/{n}" for n in ("predict", "health", "metrics")}}
    server_id = call("POST", "/api/servers", json={**server, "id": "srv-openapi"})["serverId"]
    call("POST", "/api/servers", json={**server, "id": "srv-openapi"}, expect=409)
    call(
        "POST",
        "/api/servers",
        json={**server, "name": "no-metrics", "endpoints": {"predict": f"{dead}/p", "health": f"{dead}/h"}},
    )
    call("POST", "/api/servers/{id}/heartbeat", json=EXAMPLE_HEARTBEAT, id=server_id)
    call("POST", "/api/servers/{id}/heartbeat", id=server_id)  # an empty body is a healthy heartbeat
    listed = call("GET", "/api/servers")["servers"]
    assert {s["id"] for s in listed} >= {server_id}
    call("GET", "/api/servers?status=online&group=production")
    call("GET", "/api/servers?status=sleeping", expect=400)
    call("GET", "/api/servers", token="user", expect=403)
    call("GET", "/api/servers", token=None, expect=401)
    call("GET", "/api/servers/{id}/metrics", id=server_id)
    call("GET", "/api/servers/{id}/metrics", id="nope", expect=404)
    call("POST", "/api/servers/{id}/token", id=server_id)
    call("POST", "/api/servers/{id}/token", id="nope", expect=404)
    call("POST", "/api/servers/{id}/token", id=server_id, token="user", expect=403)

    # Tasks: PENDING (held: no server has its capability), PROCESSING, COMPLETED, retried.
    task = {**EXAMPLE_TASK, "capabilities": ["video", "held-for-test"]}
    task_id = call("POST", "/api/task", json=task, token="user")["id"]
    call("POST", "/api/task", json={**task, "colour": "red"}, token="user", expect=400)
    call("POST", "/api/task", json={**task, "payload": {"blob": "x" * 300_000}}, token="user", expect=413)
    call("GET", "/api/task/{id}", id=task_id, token="user")
    call("GET", "/api/task/{id}", id="task_abc123", expect=404)
    call("GET", "/api/task/{id}", id="bad id!", expect=400)
    call("POST", "/api/task/{id}/retry", id=task_id, expect=409)  # PENDING
    call("POST", "/api/task/{id}/cancel", id=task_id, token="user")
    assert call("GET", "/api/task/{id}", id=task_id)["status"] == "CANCELLED"
    call("POST", "/api/task/{id}/retry", id=task_id, token="user")
    _start_processing(checked, task_id, server_id)
    call(
        "PUT",
        "/api/task/{id}",
        id=task_id,
        json={"status": "PROCESSING", "progress": 45, "message": "halfway"},
    )
    assert call("POST", "/api/task/{id}/output", id=task_id, json={"data": {"line": 1}}) == {
        "taskId": task_id,
        "index": 0,
    }
    call("POST", "/api/task/{id}/output", id=task_id, json={"data": "x" * 70_000}, expect=413)
    call("POST", "/api/task/{id}/output", id=task_id, json={"chunk": 1}, expect=400)
    call("POST", "/api/task/{id}/output", id=task_id, json={"data": 1}, token="user", expect=403)
    done = call("PUT", "/api/task/{id}", id=task_id, json=EXAMPLE_COMPLETED)
    assert done["status"] == "COMPLETED" and "completedAt" in done
    call("PUT", "/api/task/{id}", id=task_id, json=EXAMPLE_COMPLETED, expect=409)  # finished
    call("POST", "/api/task/{id}/output", id=task_id, json={"data": 2}, expect=409)
    streamed = call("GET", "/api/task/{id}/stream", id=task_id, token="user")
    assert 'event: output\ndata: {"index":0,"data":{"line":1}}' in streamed and "event: done" in streamed
    call("GET", "/api/task/{id}/stream", id=task_id, headers={"Last-Event-ID": "x"}, expect=400)
    call("GET", "/api/task/{id}/stream", id="task_abc123", expect=404)
    call("POST", "/api/task", json=task, token="admin")
    listed_tasks = call("GET", "/api/tasks?limit=1")
    assert len(listed_tasks["tasks"]) == 1 and listed_tasks["nextCursor"]
    call("GET", "/api/tasks?status=COMPLETED&limit=200&cursor=" + listed_tasks["nextCursor"], token="user")
    call("GET", "/api/tasks?limit=201", expect=400)
    call("GET", "/api/tasks?status=DONE", expect=400)
    call("GET", "/api/tasks?cursor=bm90IGEgY3Vyc29y", expect=400)
    call("GET", "/api/tasks", token=None, expect=401)
    queue = call("GET", "/api/stats/queue", token="user")
    assert queue["pending"] == 1 and queue["pendingByPriority"] == [{"priority": 1, "count": 1}]
    keyed = {"Idempotency-Key": "openapi-1"}
    first = call("POST", "/api/task", json=task, token="user", headers=keyed)
    assert call("POST", "/api/task", json=task, token="user", headers=keyed)["id"] == first["id"]
    call("POST", "/api/task", json={**task, "priority": 9}, token="user", headers=keyed, expect=409)
    call("POST", "/api/task", json=task, token="user", headers={"Idempotency-Key": ""}, expect=400)
    # A public receiver (webhooks refuse loopback); never called: no dispatcher runs here.
    hooked = call("POST", "/api/task", json={**task, "webhook": "https://hooks.example.com/h"}, token="user")[
        "id"
    ]
    call("POST", "/api/task/{id}/cancel", id=hooked, token="user")
    deliveries = call("GET", "/api/task/{id}/webhooks", id=hooked, token="user")["deliveries"]
    assert [(d["taskStatus"], d["state"], d["attempts"]) for d in deliveries] == [
        ("CANCELLED", "pending", [])
    ]
    call("GET", "/api/task/{id}/webhooks", id=task_id, token="user")
    call("GET", "/api/task/{id}/webhooks", id="task_abc123", expect=404)
    waited = call("POST", "/api/task", json={**task, "async": False}, token="user")
    assert waited["status"] == "PENDING" and waited["type"] == task["type"]  # a TaskView

    call(
        "POST",
        "/api/servers/{id}/maintenance",
        json={"maintenance": True, "reason": "Scheduled maintenance"},
        id=server_id,
    )
    call("POST", "/api/servers/{id}/maintenance", json={"maintenance": False}, id=server_id)
    call("DELETE", "/api/servers/{id}", id=server_id)

    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    call("GET", "/api/stats/tasks")
    call("GET", f"/api/stats/tasks?date={day}", token="user")
    call("GET", "/api/stats/tasks?date=yesterday", expect=400)
    call("GET", "/api/stats/hourly", token="user")
    call("GET", f"/api/stats/hourly?date={day}")
    other = call("POST", "/api/servers", json={**server, "id": "srv-stats"})["serverId"]
    call("GET", "/api/stats/servers/{id}", id=other)
    call("GET", "/api/stats/servers/{id}", id="nope", expect=404)
    call("GET", "/api/stats/load-balancer", token="user")
    seen = call("GET", "/api/overview?days=7&limit=5")
    assert len(seen["stats"]["daily"]) == 7 and seen["stats"]["hourly"] is None and seen["servers"]
    mine = call("GET", f"/api/overview?status=PENDING&end={day}", token="user")
    assert mine["servers"] is None and len(mine["stats"]["hourly"]) == 24
    call("GET", "/api/overview?days=32", expect=400)
    call("GET", "/api/overview", token=None, expect=401)
    call("POST", "/api/stats/load-balancer/algorithm", json={"algorithm": "least-connections"})
    call(
        "POST",
        "/api/stats/load-balancer/algorithm",
        json={"algorithm": "least-connections"},
        token="user",
        expect=403,
    )

    assert checked.covered == {(method, path) for method, path, _ in operations(spec)}


def _start_processing(checked: Checked, task_id: str, server_id: str) -> None:
    """What dispatch does: PENDING -> PROCESSING on the server, taking a slot."""
    store = checked.ctx.store
    task = store.get_task(task_id)
    assert task is not None and task.status is TaskStatus.PENDING
    now = now_ms()
    store.claim_task(
        task,
        {
            "status": TaskStatus.PROCESSING,
            "server_id": server_id,
            "attempts": task.attempts + 1,
            "started_at": now,
            "deadline": now + 3_600_000,
            "updated_at": now,
        },
    )

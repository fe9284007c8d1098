"""Hostile input. Schemathesis generates requests from `/openapi.json`, valid and invalid, for
every operation, with an admin token (so requests get past auth into the parsing and the
services); every answer must be documented (status code, content type, body schema) and none
may be a 5xx. Then the classic shapes by hand: bodies over the limit, deep nesting, huge
arrays, unicode everywhere, and path ids of every length: each a clear 4xx that changes
nothing, or (unicode inside a payload) a normal 200.

In-process, on a SQLite store, without the dispatcher: input handling is the subject here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from starlette.applications import Starlette
from starlette.testclient import TestClient

from core.config import Config
from core.local.events import LocalEvents
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.services.context import Context
from handlers._http import create_app
from handlers.routes import ROUTES
from tests.e2e.harness import RATE_LIMITS_OFF, SECRET, Api, unique

from .conftest import Scale
from .proof import FIGURES_DIR

# Every check schemathesis has (no 5xx; statuses, content types, headers and bodies as
# documented; schema-valid data accepted and invalid data refused; auth enforced; OPTIONS and
# unsupported methods answered as documented): the document says exactly what the API accepts.
CHECKS = list(schemathesis.checks.CHECKS.get_all())
LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Starlette]:
    store = SqliteStore(str(tmp_path_factory.mktemp("hostile") / "t.db"))
    # `async: false` would wait 25 s, and a generated `Prefer: wait=N` up to 60 s, for a dispatcher
    # this app does not run: the deployment's cap (the least it may be, 1 s) bounds both.
    config = Config.from_env(
        {"JWT_SECRET": SECRET, **RATE_LIMITS_OFF}, sync_wait_ms=20, sync_wait_max_ms=1_000
    )
    ctx = Context(store=store, queue=CallbackQueue(), config=config, events=LocalEvents())
    yield create_app(ROUTES, ctx)
    store.close()


@pytest.fixture(scope="module")
def api(app: Starlette) -> Iterator[Api]:
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api("sqlite", client, app.state.context.store, SECRET)
        yield api


def test_generated_requests_get_documented_answers_and_no_5xx(app: Starlette, api: Api, scale: Scale) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    headers = {"Authorization": f"Bearer {api.admin}"}
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(
                max_examples=scale.fuzz_examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
            def call(case: schemathesis.Case) -> None:
                response = case.call()
                sent[case.operation.label] += 1
                statuses[response.status_code] += 1
                # `headers`: the token is the caller's own (schemathesis then probes without it).
                case.validate_response(response, checks=CHECKS, headers=headers)

            try:
                call()
            except Unsatisfiable:
                # Nothing in this operation can be made invalid (no parameters, no body).
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    total = sum(sent.values())
    figures = {"requests": total, "operations": len(operations), "statuses": dict(sorted(statuses.items()))}
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    (FIGURES_DIR / "hostile.json").write_text(json.dumps(figures, indent=2))
    assert set(sent) == {op.label for op in operations}
    assert total >= (1000 if scale.long else 100), figures
    assert not [status for status in statuses if status >= 500], figures


# -- by hand -------------------------------------------------------------------------------


def task_body(**fields: object) -> dict[str, object]:
    return {"type": "hostile", "priority": 1, "payload": {}, **fields}


def nothing_created(api: Api, owner_sub: str) -> bool:
    return api.store.tasks_by_owner(owner_sub) == []


@pytest.mark.parametrize(
    ("what", "content", "status"),
    [
        (
            "one byte over the limit",
            b'{"type": "x", "priority": 1, "payload": {"p": "' + b"a" * LIMIT + b'"}}',
            413,
        ),
        (
            "deeply nested arrays",
            b'{"type": "x", "priority": 1, "payload": {"p": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
            400,
        ),
        (
            "deeply nested objects",
            b'{"type": "x", "priority": 1, "payload": ' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b"}",
            400,
        ),
        ("a huge capabilities array", json.dumps(task_body(capabilities=["c"] * 50_000)).encode(), 400),
        ("not JSON", b"\xff\xfe{", 400),
        ("a lone surrogate", b'{"type": "x", "priority": 1, "payload": {"p": "\\ud800"}}', 400),
        ("unicode in the type", json.dumps(task_body(type="vidéo-✓")).encode(), 400),
        ("a NUL in the type", json.dumps(task_body(type="a\u0000b")).encode(), 400),
        ("a float priority", json.dumps(task_body(priority=1.5)).encode(), 400),
        ("a huge integer priority", b'{"type": "x", "priority": 1' + b"0" * 5000 + b', "payload": {}}', 400),
        ("an array body", b"[]", 400),
    ],
)
def test_hostile_bodies_are_clear_4xx_and_create_nothing(
    api: Api, what: str, content: bytes, status: int
) -> None:
    sub = unique("hostile")
    reply = api.post(
        "/api/task",
        content=content,
        headers={"Content-Type": "application/json"},
        token=api.token("user", sub),
    )
    assert reply.status_code == status, (what, reply.status_code, reply.text[:300])
    reply.error(status)  # the documented error shape
    assert nothing_created(api, sub), what


def test_a_declared_length_over_the_limit_is_refused_before_reading(api: Api) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(10 * LIMIT)}
    reply = api.post("/api/task", content=b"{}" + b" " * (10 * LIMIT - 2), headers=headers, token=api.user())
    reply.error(413)


def test_unicode_payloads_and_nesting_within_reason_are_accepted_intact(api: Api) -> None:
    payload = {
        "text": "日本語 ✓ ﷽ \U0001d518\U0001d52b \u202e",
        "nested": [[[[{"k": "v"}]]]],
        "emoji": "🧪" * 100,
    }
    owner = api.user()
    task_id = api.post(
        "/api/task", json=task_body(payload=payload, capabilities=["held-for-test"]), token=owner
    ).ok()["id"]
    assert api.get(f"/api/task/{task_id}", token=owner).ok()["status"] == "PENDING"
    assert api.store.get_task(task_id).payload == payload  # type: ignore[union-attr]


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 127, 128, 129, 200, 1000, 10_000])
def test_path_ids_of_every_length_are_404_or_400(api: Api, length: int) -> None:
    task_id = "t" * length
    expected = 404 if length <= 128 else 400
    for method, path in (
        ("GET", f"/api/task/{task_id}"),
        ("PUT", f"/api/task/{task_id}"),
        ("POST", f"/api/task/{task_id}/retry"),
        ("POST", f"/api/task/{task_id}/cancel"),
        ("DELETE", f"/api/servers/{task_id}"),
        ("GET", f"/api/servers/{task_id}/metrics"),
        ("POST", f"/api/servers/{task_id}/heartbeat"),
        ("GET", f"/api/stats/servers/{task_id}"),
    ):
        body = (
            {"status": "COMPLETED"}
            if method == "PUT"
            else {"status": "healthy"}
            if "heartbeat" in path
            else None
        )
        reply = api.request(method, path, token=api.admin, **({"json": body} if body else {}))
        assert reply.status_code == expected, (method, path[:60], reply.status_code, reply.text[:200])


@pytest.mark.parametrize("task_id", ["a b", "a%2Fb", "..", "a.b", "%00", "é", "a;b", "%F0%9F%A7%AA", "a'--"])
def test_path_ids_with_other_characters_are_400(api: Api, task_id: str) -> None:
    reply = api.get(f"/api/task/{task_id}", token=api.admin)
    assert reply.status_code in (400, 404), reply.text
    if reply.status_code == 404:  # only when the router never matched (e.g. "..")
        assert "No route" in reply.json()["details"], reply.text


def test_an_empty_path_id_is_not_a_route(api: Api) -> None:
    assert api.get("/api/task/", token=api.admin).status_code in (404, 405)

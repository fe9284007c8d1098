"""The auth matrix: every route against every kind of caller, each cell's status read from
the table in docs/SECURITY.md (so the documentation cannot drift from the behaviour). A
refused call changes nothing; `apiKey` never appears in a response or a log line; URLs that
reach a cloud metadata address are refused at registration and at call time."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from core.config import Config
from core.local.events import LocalEvents
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.services.context import Context
from handlers._http import create_app
from handlers.routes import ROUTES as APP_ROUTES
from tests.e2e.harness import EXAMPLE_SERVER, HELD, RATE_LIMITS_OFF, SECRET, Api, unique

from .auth_cases import API_KEY, CALLERS, ROUTES, Route, label

SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "SECURITY.md"


def documented_matrix() -> tuple[list[str], dict[str, list[int]]]:
    text = SECURITY_DOC.read_text()
    table = text.split("<!-- auth-matrix:start -->")[1].split("<!-- auth-matrix:end -->")[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.strip().splitlines()
    ]
    header, body = rows[0], [row for row in rows[2:]]
    return header[1:], {row[0].strip("`"): [int(cell) for cell in row[1:]] for row in body}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    store = SqliteStore(str(tmp_path_factory.mktemp("matrix") / "t.db"))
    config = Config.from_env({"JWT_SECRET": SECRET, **RATE_LIMITS_OFF})
    ctx = Context(store=store, queue=CallbackQueue(), config=config, events=LocalEvents())
    with TestClient(create_app(APP_ROUTES, ctx), raise_server_exceptions=False) as client:
        yield Api("sqlite", client, store, SECRET)
    store.close()


def test_the_documented_matrix_covers_every_route_and_caller() -> None:
    callers, matrix = documented_matrix()
    assert callers == list(CALLERS)
    assert list(matrix) == [label(route) for route in ROUTES]


def test_every_api_route_of_the_app_is_in_the_matrix() -> None:
    served = {
        f"{method} {route.path.replace('{id}', ':id')}"
        for route in APP_ROUTES
        if route.path.startswith("/api/")  # type: ignore[attr-defined]
        for method in route.methods - {"HEAD"}  # type: ignore[attr-defined]
    }
    assert served == {label(route) for route in ROUTES if route.path.startswith("/api/")}


def snapshot(api: Api, *ids: str) -> list[Any]:
    return [api.store.get_task(ids[0]), *(api.store.get_server(i) for i in ids[1:])]


@pytest.mark.parametrize("route", ROUTES, ids=label)
def test_every_caller_gets_the_documented_status_and_a_refusal_changes_nothing(
    api: Api, route: Route, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    callers, matrix = documented_matrix()
    seen = {}
    for name in callers:
        target = route.setup(api)
        before = snapshot(api, target.task_id, target.server_id, target.other_server_id)
        path = route.path.format(task=target.task_id, server=target.server_id)
        kwargs = {"json": route.body()} if route.body else {}
        reply = api.request(route.method, path, token=CALLERS[name](api, target), **kwargs)
        seen[name] = reply.status_code
        assert API_KEY not in reply.text and API_KEY not in str(reply.headers), (name, reply.text)
        if reply.status_code >= 400:
            assert snapshot(api, target.task_id, target.server_id, target.other_server_id) == before, name
        if reply.status_code == 401:
            assert reply.headers["www-authenticate"].startswith("Bearer")
    assert seen == dict(zip(callers, matrix[label(route)], strict=True))
    assert API_KEY not in caplog.text


def test_another_users_task_is_never_listed_read_or_changed(api: Api) -> None:
    task_id = api.create_task(api.token("user", "alice-" + unique("a")))
    stranger = api.user()
    before = api.store.get_task(task_id)
    for method, path, body in (
        ("GET", f"/api/task/{task_id}", None),
        ("PUT", f"/api/task/{task_id}", {"status": "COMPLETED"}),
        ("POST", f"/api/task/{task_id}/retry", None),
        ("POST", f"/api/task/{task_id}/cancel", None),
    ):
        reply = api.request(method, path, token=stranger, **({"json": body} if body else {}))
        reply.error(404, "Not found", details=f"Task not found: {task_id}")
    assert task_id not in api.get("/api/tasks", token=stranger).ok().__repr__()
    assert api.store.get_task(task_id) == before


METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.169.254./latest",
    "http://[fd00:ec2::254]/latest",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "http://\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14/",
    "http://169\u3002254\u3002169\u3002254/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./",
    "http://100.100.100.200/latest/meta-data/",
    "http://[fe80::1]/",
    "http://user:pass@127.0.0.1/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
]


@pytest.mark.parametrize("url", METADATA_URLS)
@pytest.mark.parametrize("field", ["predict", "health", "metrics", "cancel"])
def test_a_backend_url_that_can_reach_a_metadata_address_is_refused(api: Api, url: str, field: str) -> None:
    endpoints = {"predict": "http://127.0.0.1:9/p", "health": "http://127.0.0.1:9/h", field: url}
    server_id = unique("ssrf")
    body = {**EXAMPLE_SERVER, "id": server_id, "endpoints": endpoints}
    reply = api.post("/api/servers", json=body, token=api.admin)
    reply.error(400, "Invalid request", mentions=field)
    assert api.store.get_server(server_id) is None


@pytest.mark.parametrize("url", METADATA_URLS)
def test_a_webhook_that_can_reach_a_metadata_address_is_refused(api: Api, url: str) -> None:
    sub = unique("hook")
    body = {"type": "hook", "priority": 1, "payload": {}, "capabilities": [HELD], "webhook": url}
    api.post("/api/task", json=body, token=api.token("user", sub)).error(
        400, "Invalid request", mentions="webhook"
    )
    assert api.store.tasks_by_owner(sub) == []


# A name that later resolves to a metadata address: tests/unit/test_outbound_calls.py.


def test_matrix_table_is_well_formed() -> None:
    _, matrix = documented_matrix()
    assert all(re.fullmatch(r"(GET|POST|PUT|DELETE) /\S*", row) for row in matrix)

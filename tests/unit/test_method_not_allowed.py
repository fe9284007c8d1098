"""A 405 names every method the path serves (security review, finding 6: OPTIONS on
/api/task/{id} answered `Allow: GET, HEAD`, hiding PUT), and the synchronous wait is a setting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from core.config import Config
from core.local.events import LocalEvents
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.services.context import Context
from handlers._http import create_app
from handlers.routes import ROUTES


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = SqliteStore(str(tmp_path / "t.db"))
    ctx = Context(
        store=store,
        queue=CallbackQueue(),
        config=Config.from_env({"JWT_SECRET": "s" * 40}),
        events=LocalEvents(),
    )
    with TestClient(create_app(ROUTES, ctx)) as opened:
        yield opened
    store.close()


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/api/task/task_abc", "GET, HEAD, PUT"),
        ("DELETE", "/api/task/task_abc", "GET, HEAD, PUT"),
        ("OPTIONS", "/api/servers", "GET, HEAD, POST"),
        ("PATCH", "/api/servers/srv-1", "DELETE"),
        ("OPTIONS", "/api/task", "POST"),
    ],
)
def test_a_405_names_every_method_of_the_path(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    reply = client.request(method, path)
    assert reply.status_code == 405
    assert reply.headers["allow"] == allowed
    assert reply.json() == {"error": "Method not allowed", "details": f"{method} is not allowed on {path}"}


def test_the_synchronous_wait_is_a_setting() -> None:
    assert Config.from_env({}).sync_wait_ms == 25_000
    assert Config.from_env({"SYNC_WAIT": "5000"}).sync_wait_ms == 5_000
    with pytest.raises(ValueError, match="SYNC_WAIT"):
        Config.from_env({"SYNC_WAIT": "soon"})


@pytest.mark.parametrize("declared", ["\u00b2", "\u00b9\u00b2"])
def test_a_content_length_of_unicode_digits_is_not_a_crash(client: TestClient, declared: str) -> None:
    """'²'.isdigit() is true and int('²') raises: the Lambda path (Mangum passes headers as
    sent) read such a Content-Length into a 500. Latin-1 carries '²' and '¹' in a header."""
    import asyncio

    from starlette.requests import Request

    from handlers._http import read_body

    app = client.app
    sent = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> dict[str, object]:
        return sent.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/task",
        "headers": [(b"content-length", declared.encode("latin-1"))],
        "app": app,
    }
    assert asyncio.run(read_body(Request(scope, receive))) == b"{}"

"""The client where a real gateway adds nothing: what goes on the wire (headers, body,
environment defaults), replies no healthy gateway gives (5xx, HTML, garbage), the wait loop's
pauses, and that the client stays apart from the server's code. Everything that a real
gateway can answer is tested against one in tests/e2e/test_client.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import msgspec
import pytest

from core.domain import replies
from taskgate import models
from taskgate.client import FIRST_PAUSE, LAST_PAUSE, Client
from taskgate.errors import (
    NetworkError,
    RateLimited,
    ServerError,
    TaskgateError,
    retry_after,
)

Handler = Callable[[httpx.Request], httpx.Response]

TASK = {
    "id": "task_1",
    "type": "demo",
    "priority": 1,
    "status": "PENDING",
    "progress": 0,
    "serverId": None,
    "result": None,
    "error": None,
    "attempts": 0,
    "createdAt": 1,
    "updatedAt": 1,
}


def client(handler: Handler, url: str | None = "http://gateway.test", token: str | None = "tok") -> Client:
    return Client(url, token, transport=httpx.MockTransport(handler))


class Recorder:
    """A fake gateway: answers each request with the next reply, and keeps the requests."""

    def __init__(self, *replies: httpx.Response) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def created() -> httpx.Response:
    return httpx.Response(200, json={"id": "task_1", "status": "PENDING", "createdAt": 1, "updatedAt": 1})


# -- the request ---------------------------------------------------------------------------


def test_create_task_sends_the_idempotency_key_header_and_only_the_fields_given() -> None:
    gateway = Recorder(created())
    with client(gateway) as c:
        c.create_task("demo", {"a": 1}, idempotency_key="key-1")
        c.create_task("demo", {}, 5, capabilities=["gpu"], timeout=9000, webhook="https://hook.test/x")

    first, second = gateway.requests
    assert first.headers["Idempotency-Key"] == "key-1"
    assert (first.method, first.url.path) == ("POST", "/api/task")
    assert msgspec.json.decode(first.content) == {
        "type": "demo",
        "priority": 1,
        "payload": {"a": 1},
        "async": True,
    }
    assert "Idempotency-Key" not in second.headers
    assert msgspec.json.decode(second.content) == {
        "type": "demo",
        "priority": 5,
        "payload": {},
        "async": True,
        "capabilities": ["gpu"],
        "timeout": 9000,
        "webhook": "https://hook.test/x",
    }
    assert first.headers["Authorization"] == "Bearer tok"
    assert first.headers["Content-Type"] == "application/json"


def test_url_and_token_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKGATE_URL", "http://from-env.test:9000/")
    monkeypatch.setenv("TASKGATE_TOKEN", "env-token")
    gateway = Recorder(httpx.Response(200, json=TASK))
    with client(gateway, url=None, token=None) as c:
        c.get_task("task_1")
    with client(gateway, url="http://given.test", token="given") as c:
        c.get_task("task_1")
    from_env, given = gateway.requests
    assert str(from_env.url) == "http://from-env.test:9000/api/task/task_1"
    assert from_env.headers["Authorization"] == "Bearer env-token"
    assert str(given.url) == "http://given.test/api/task/task_1"
    assert given.headers["Authorization"] == "Bearer given"


def test_without_any_token_no_authorization_header_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKGATE_TOKEN", raising=False)
    monkeypatch.delenv("TASKGATE_URL", raising=False)
    gateway = Recorder(httpx.Response(200, json=TASK))
    with client(gateway, url=None, token=None) as c:
        c.get_task("task_1")
    assert "Authorization" not in gateway.requests[0].headers
    assert gateway.requests[0].url.host == "localhost" and gateway.requests[0].url.port == 8787


# -- replies a healthy gateway does not give -----------------------------------------------


def test_a_503_is_a_server_error_with_retry_after() -> None:
    body = {"error": "Service unavailable", "details": "The store is throttling"}
    gateway = Recorder(httpx.Response(503, json=body, headers={"Retry-After": "2"}))
    with client(gateway) as c, pytest.raises(ServerError) as caught:
        c.load_balancer()
    assert (caught.value.status, caught.value.retry_after) == (503, 2.0)
    assert str(caught.value) == "503 Service unavailable: The store is throttling"


def test_a_reply_that_is_not_the_error_shape_is_reported_by_its_reason_and_text() -> None:
    page = "<html><body>\n  <h1>502 Bad Gateway</h1>\n</body></html>"
    gateway = Recorder(httpx.Response(502, text=page))
    with client(gateway) as c, pytest.raises(ServerError) as caught:
        c.get_task("task_1")
    assert str(caught.value) == "502 Bad Gateway: <html><body> <h1>502 Bad Gateway</h1> </body></html>"


def test_a_status_without_its_own_class_is_the_base_error() -> None:
    body = {"error": "Method not allowed", "details": "PATCH is not allowed on /api/task"}
    with client(Recorder(httpx.Response(405, json=body))) as c, pytest.raises(TaskgateError) as caught:
        c.get_task("task_1")
    assert type(caught.value) is TaskgateError and caught.value.status == 405


def test_a_success_reply_that_does_not_decode_is_an_error() -> None:
    with client(Recorder(httpx.Response(200, json={"id": 5}))) as c, pytest.raises(TaskgateError) as caught:
        c.get_task("task_1")
    assert caught.value.status == 200 and caught.value.error == "Unexpected reply"


def test_a_read_timeout_is_a_network_error() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with client(slow) as c, pytest.raises(NetworkError) as caught:
        c.get_task("task_1")
    assert caught.value.status is None and str(caught.value).startswith("Timed out: GET http://gateway.test")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: now
        ("soon", None),
        ("-3", None),
        ("nan", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str | None, seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after(header, now=now) == seconds


# -- wait ----------------------------------------------------------------------------------


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Records the wait loop's pauses instead of sleeping them."""
    taken: list[float] = []
    monkeypatch.setattr("taskgate._following.time.sleep", taken.append)
    yield taken


def test_wait_polls_with_a_pause_growing_to_about_a_second(sleeps: list[float]) -> None:
    pending = [httpx.Response(200, json=TASK) for _ in range(12)]
    gateway = Recorder(*pending, httpx.Response(200, json={**TASK, "status": "FAILED", "error": "boom"}))
    with client(gateway) as c:
        task = c.wait("task_1", timeout=None)
    assert task.status is models.TaskStatus.FAILED and task.error == "boom"
    assert len(sleeps) == 12 and sleeps[0] == FIRST_PAUSE
    assert sleeps == sorted(sleeps) and sleeps[-1] == LAST_PAUSE == max(sleeps)


def test_wait_waits_out_a_rate_limit_that_ends_in_time(sleeps: list[float]) -> None:
    limited = httpx.Response(
        429, json={"error": "Too many requests", "details": "x"}, headers={"Retry-After": "3"}
    )
    done = httpx.Response(200, json={**TASK, "status": "COMPLETED", "progress": 100})
    with client(Recorder(limited, done)) as c:
        assert c.wait("task_1", timeout=60).status is models.TaskStatus.COMPLETED
    assert sleeps == [3.0]


def test_wait_raises_a_rate_limit_that_outlasts_its_timeout(sleeps: list[float]) -> None:
    limited = httpx.Response(
        429, json={"error": "Too many requests", "details": "x"}, headers={"Retry-After": "30"}
    )
    with client(Recorder(limited)) as c, pytest.raises(RateLimited):
        c.wait("task_1", timeout=5)
    assert sleeps == []


# -- the client and the server stay apart, and agree -----------------------------------------


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    code = (
        "import sys, taskgate.client, taskgate.async_client, taskgate.cli_commands\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('core', 'handlers', 'starlette')"
        " or m.startswith('taskgate.backend')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_backend_sdk_loads_nothing_of_the_gateway() -> None:
    code = (
        "import sys, taskgate.backend\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('core', 'handlers', 'tools', 'boto3')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


# Each client reply type and the server's description of that reply (core/domain/schemas.py).
MIRRORS: list[tuple[type[msgspec.Struct], type[msgspec.Struct]]] = [
    (models.TaskCreated, replies.TaskCreated),
    (models.Task, replies.TaskView),
    (models.TaskAction, replies.CancelReply),
    (models.TaskAction, replies.RetryReply),
    (models.ServerRegistered, replies.ServerRegistered),
    (models.Endpoints, replies.ServerEndpoints),
    (models.ServerHealth, replies.ServerHealth),
    (models.Server, replies.ServerView),
    (models.ServerList, replies.ServerList),
    (models.HeartbeatReply, replies.HeartbeatReply),
    (models.MaintenanceReply, replies.MaintenanceReply),
    (models.ServerUnregistered, replies.UnregisterReply),
    (models.MetricValues, replies.MetricValues),
    (models.ServerMetrics, replies.ServerMetrics),
    (models.TopServer, replies.TopServer),
    (models.HourlyCount, replies.HourlyCount),
    (models.TaskStats, replies.TaskStats),
    (models.HourStats, replies.HourStats),
    (models.HourlyReport, replies.HourlyReport),
    (models.ServerStats, replies.ServerStats),
    (models.ServerLoad, replies.ServerLoad),
    (models.LoadBalancerStatus, replies.LoadBalancerStatus),
    (models.AlgorithmSet, replies.AlgorithmReply),
    (models.TaskSummary, replies.TaskSummary),
    (models.TaskPage, replies.TaskList),
    (models.PriorityCount, replies.PriorityCount),
    (models.QueueSummary, replies.QueueSummary),
    (models.BacklogGroup, replies.BacklogGroup),
    (models.WebhookAttempt, replies.WebhookAttemptView),
    (models.WebhookDelivery, replies.WebhookDeliveryView),
    (models.WebhookDeliveries, replies.WebhookDeliveries),
]


def _wire_names(struct: type[msgspec.Struct]) -> set[str]:
    return {field.encode_name for field in msgspec.structs.fields(struct)}


@pytest.mark.parametrize(("mine", "theirs"), MIRRORS, ids=lambda t: t.__name__)
def test_client_replies_have_the_fields_the_server_sends(
    mine: type[msgspec.Struct], theirs: type[msgspec.Struct]
) -> None:
    # A field the server adds is ignored by older clients; here it must be added to
    # taskgate/models.py too, so the client's users can read it. The client may know more
    # (fields of newer gateways), but only as optional ones: an older gateway omits them.
    missing = _wire_names(theirs) - _wire_names(mine)
    assert not missing, f"update taskgate/models.py {mine.__name__}: {sorted(missing)}"
    extra = {
        f.encode_name
        for f in msgspec.structs.fields(mine)
        if f.encode_name not in _wire_names(theirs) and f.required
    }
    assert not extra, f"{mine.__name__}: fields this gateway never sends must be optional: {sorted(extra)}"

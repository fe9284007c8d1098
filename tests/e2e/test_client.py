"""The Python client (`taskgate.client.Client`) against a real `taskgate serve` process and
real mock backends on loopback: every call, and each error class from a real reply.

One gateway serves the module (fleet.py); each test has its own backends, capability and user.
A second gateway with a low rate limit gives a real 429.
"""

from __future__ import annotations

import datetime
import itertools
import time
from collections.abc import Iterator

import pytest

from taskgate.client import Client
from taskgate.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NetworkError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    TaskgateError,
    Unauthorized,
    WaitTimeout,
)
from taskgate.models import ServerStatus, Task, TaskCreated, TaskStatus

from .fleet import Fleet, Gateway, Mock, free_port, start_gateway
from .harness import HELD, unique


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("client"), spares=2) as gateway:
        yield gateway


@pytest.fixture
def fleet(gateway: Gateway) -> Iterator[Fleet]:
    with Fleet(gateway) as fleet:
        yield fleet


@pytest.fixture
def user(gateway: Gateway, fleet: Fleet) -> Iterator[Client]:
    """The fleet's user: owns the fleet's tasks."""
    with Client(gateway.base, fleet.owner) as client:
        yield client


@pytest.fixture
def admin(gateway: Gateway) -> Iterator[Client]:
    with Client(gateway.base, gateway.api.admin) as client:
        yield client


def held_task(client: Client) -> str:
    """A task no server can take: it stays PENDING until the test moves it."""
    return client.create_task("e2e-client", {"held": True}, capabilities=[HELD]).id


# -- tasks ---------------------------------------------------------------------------------


def test_create_then_wait_returns_the_finished_task(fleet: Fleet, user: Client) -> None:
    fleet.add(Mock())
    created = user.create_task("e2e-client", {"prompt": "hello"}, 3, capabilities=[fleet.capability])
    fleet.task_ids.append(created.id)
    assert isinstance(created, TaskCreated)
    assert created.status is TaskStatus.PENDING and created.created_at <= created.updated_at

    done = user.wait(created.id, timeout=20)

    assert isinstance(done, Task) and done.is_finished
    assert (done.id, done.type, done.priority, done.status) == (created.id, "e2e-client", 3, "COMPLETED")
    assert done.result["echo"] == {"prompt": "hello"}
    assert (done.progress, done.attempts) == (100, 1)
    assert done.server_id == fleet.server_ids[0]
    assert done.completed_at is not None and done.started_at is not None
    assert user.get_task(created.id) == done
    fleet.assert_settled()


def test_async_false_returns_the_finished_task_in_the_reply(fleet: Fleet, user: Client) -> None:
    fleet.add(Mock(delay_ms=200))
    task = user.create_task("e2e-client", {"n": 7}, capabilities=[fleet.capability], async_=False)
    fleet.task_ids.append(task.id)
    assert isinstance(task, Task)
    assert task.status is TaskStatus.COMPLETED and task.result["echo"] == {"n": 7}
    fleet.assert_settled()


def test_wait_calls_on_progress_with_increasing_progress(fleet: Fleet, user: Client) -> None:
    # Progress callbacks 20, 40, 60, 80 about 0.8 s apart, then the result.
    fleet.add(Mock(mode="async", delay_ms=4000, progress_steps=4))
    created = user.create_task("e2e-client", {}, capabilities=[fleet.capability])
    fleet.task_ids.append(created.id)
    seen: list[Task] = []

    done = user.wait(created.id, timeout=30, on_progress=seen.append)

    assert done.status is TaskStatus.COMPLETED and seen[-1] == done
    readings = [(task.status, task.progress) for task in seen]
    assert all(a != b for a, b in itertools.pairwise(readings)), readings
    progress = [task.progress for task in seen]
    assert progress == sorted(progress), readings
    between = {p for status, p in readings if status is TaskStatus.PROCESSING and 0 < p < 100}
    assert len(between) >= 2 and between <= {20, 40, 60, 80}, readings
    fleet.assert_settled()


def test_wait_raises_a_timeout_error_with_the_task_as_last_seen(user: Client) -> None:
    task_id = held_task(user)
    seen: list[Task] = []
    started = time.monotonic()

    with pytest.raises(WaitTimeout) as caught:
        user.wait(task_id, timeout=0.6, on_progress=seen.append)

    assert 0.6 <= time.monotonic() - started < 5
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.task.id == task_id and caught.value.task.status is TaskStatus.PENDING
    assert str(caught.value) == f"task {task_id} not finished after 0.6 s (status PENDING)"
    assert [(task.status, task.progress) for task in seen] == [(TaskStatus.PENDING, 0)]
    user.cancel_task(task_id)


def test_cancel_then_retry(user: Client) -> None:
    task_id = held_task(user)

    cancelled = user.cancel_task(task_id)
    assert (cancelled.message, cancelled.task_id) == ("Task cancelled", task_id)
    assert user.get_task(task_id).status is TaskStatus.CANCELLED

    retried = user.retry_task(task_id)
    assert (retried.message, retried.task_id) == ("Task queued for retry", task_id)
    assert user.get_task(task_id).status is TaskStatus.PENDING
    user.cancel_task(task_id)


def test_idempotency_key_is_accepted_by_the_gateway(user: Client) -> None:
    # Whether the gateway deduplicates is the server's business; the header must not break
    # creation (that it is sent is tests/unit/test_client.py's).
    created = user.create_task("e2e-client", {}, capabilities=[HELD], idempotency_key=unique("key"))
    assert user.get_task(created.id).status is TaskStatus.PENDING
    user.cancel_task(created.id)


# -- errors from real replies --------------------------------------------------------------


def test_unknown_task_is_not_found(user: Client) -> None:
    with pytest.raises(NotFound) as caught:
        user.get_task("task_abc123")
    error = caught.value
    assert (error.status, error.error, error.details) == (404, "Not found", "Task not found: task_abc123")
    assert str(error) == "404 Not found: Task not found: task_abc123"


def test_another_users_task_is_not_found(gateway: Gateway, user: Client) -> None:
    task_id = held_task(user)
    with Client(gateway.base, gateway.api.user()) as stranger, pytest.raises(NotFound):
        stranger.cancel_task(task_id)
    assert user.get_task(task_id).status is TaskStatus.PENDING
    user.cancel_task(task_id)


def test_cancelling_a_finished_task_is_a_conflict_and_changes_nothing(fleet: Fleet, user: Client) -> None:
    fleet.add(Mock())
    task = user.create_task("e2e-client", {}, capabilities=[fleet.capability], async_=False)
    fleet.task_ids.append(task.id)
    assert task.status is TaskStatus.COMPLETED

    with pytest.raises(Conflict) as caught:
        user.cancel_task(task.id)

    assert caught.value.status == 409 and str(caught.value).startswith("409 Conflict: ")
    assert user.get_task(task.id).status is TaskStatus.COMPLETED
    with pytest.raises(Conflict):
        user.retry_task(task.id)


@pytest.mark.parametrize("token", ["not-a-jwt", ""])
def test_a_bad_or_missing_token_is_unauthorized(gateway: Gateway, token: str) -> None:
    with Client(gateway.base, token) as client, pytest.raises(Unauthorized) as caught:
        client.get_task("task_abc123")
    assert caught.value.status == 401 and str(caught.value).startswith("401 Unauthorized: ")


def test_a_user_calling_an_admin_call_is_forbidden(user: Client) -> None:
    with pytest.raises(Forbidden) as caught:
        user.list_servers()
    assert str(caught.value) == "403 Forbidden: Admin role required"
    with pytest.raises(Forbidden):
        user.set_algorithm("random")


def test_bad_input_is_a_bad_request_naming_the_field(admin: Client, user: Client) -> None:
    with pytest.raises(BadRequest) as caught:
        user.create_task("e2e-client", {}, 11)
    assert str(caught.value) == "400 Invalid request: Invalid field priority: Expected `int` <= 10"
    with pytest.raises(BadRequest) as caught:
        user.create_task("Not A Type", {})
    assert "type" in caught.value.details
    with pytest.raises(BadRequest) as caught:
        admin.set_algorithm("fastest")
    assert "algorithm" in caught.value.details
    with pytest.raises(BadRequest):
        user.task_stats("2026-13-45")


def test_an_oversized_payload_is_payload_too_large(user: Client) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        user.create_task("e2e-client", {"blob": "x" * 300_000}, capabilities=[HELD])
    assert caught.value.status == 413


def test_an_unreachable_gateway_is_a_network_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Client(url, "t") as client, pytest.raises(NetworkError) as caught:
        client.get_task("task_abc123")
    assert isinstance(caught.value, TaskgateError) and caught.value.status is None
    assert str(caught.value).startswith(f"Network error: GET {url}/api/task/task_abc123: ")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("limited"), spares=0, RATE_LIMIT_DEFAULT=3) as gateway:
        yield gateway


def test_over_the_rate_limit_is_rate_limited_with_retry_after(limited: Gateway) -> None:
    with Client(limited.base, limited.api.user()) as client:
        # Windows are wall-clock minutes: at most 3 answers in one, so one of 7 calls is a 429.
        for _ in range(7):
            try:
                client.get_task("task_abc123")
            except NotFound:
                continue
            except RateLimited as exc:
                assert exc.status == 429 and str(exc).startswith("429 Too many requests: ")
                # The window slides: a full one weighs on the next, so the wait may pass 60 s
                # (at most until enough of it has slid out, within two windows).
                assert exc.retry_after is not None and 0 < exc.retry_after <= 120
                return
        pytest.fail("no 429 in 7 calls with a limit of 3 a minute")


# -- servers, statistics, load balancing ---------------------------------------------------


def test_server_calls(gateway: Gateway, fleet: Fleet, admin: Client) -> None:
    (backend,) = fleet.start(Mock())
    server_id, group = backend.server_id, unique("group")
    fleet.server_ids.append(server_id)  # unregistered at teardown if the test fails first

    registered = admin.register_server(
        "client-e2e",
        backend.endpoints,
        id=server_id,
        capabilities=[fleet.capability],
        groups=[group],
        max_concurrent=4,
        priority=2,
        api_key="secret-key",
    )
    assert (registered.server_id, registered.message) == (server_id, "Server registered successfully")
    with pytest.raises(Conflict):
        admin.register_server("again", backend.endpoints, id=server_id)

    (server,) = admin.list_servers(group=group)
    assert (server.id, server.name, server.status) == (server_id, "client-e2e", ServerStatus.ONLINE)
    assert (server.capabilities, server.groups, server.max_concurrent, server.priority) == (
        [fleet.capability],
        [group],
        4,
        2,
    )
    assert server.endpoints.predict == backend.endpoints["predict"] and server.active_tasks == 0

    with Client(gateway.base, registered.token) as own:
        beat = own.heartbeat(server_id, active_tasks=0, metrics={"gpu": 80})
    assert (beat.message, beat.server_id, beat.status) == ("Heartbeat updated", server_id, "online")
    metrics = admin.get_server_metrics(server_id)
    assert metrics.server_id == server_id
    assert metrics.metrics.reported == {"gpu": 80, "activeTasks": 0}
    assert (metrics.metrics.max_concurrent, metrics.metrics.current_load) == (4, 0)

    on = admin.set_maintenance(server_id, reason="disk swap")
    assert (on.message, on.status, on.maintenance_reason) == (
        "Maintenance mode enabled",
        "maintenance",
        "disk swap",
    )
    assert [s.id for s in admin.list_servers(status="maintenance", group=group)] == [server_id]
    off = admin.set_maintenance(server_id, False)
    assert off.message == "Maintenance mode disabled" and off.status is not ServerStatus.MAINTENANCE
    assert admin.list_servers(status="maintenance", group=group) == []

    assert admin.server_stats(server_id).server_id == server_id
    gone = admin.unregister_server(server_id)
    assert (gone.message, gone.server_id) == ("Server unregistered", server_id)
    assert admin.list_servers(group=group) == []
    with pytest.raises(NotFound):
        admin.get_server_metrics(server_id)


def test_statistics_and_load_balancer(fleet: Fleet, admin: Client, user: Client) -> None:
    (backend,) = fleet.add(Mock())
    task = user.create_task("e2e-client", {}, capabilities=[fleet.capability], async_=False)
    fleet.task_ids.append(task.id)
    today = datetime.datetime.now(datetime.UTC).date()

    stats = user.task_stats(today)
    assert stats.total_tasks >= 1 and stats.successful_tasks >= 1 and len(stats.hourly_trend) == 24
    assert backend.server_id in {top.server_id for top in stats.top_servers} or len(stats.top_servers) == 5
    report = user.hourly_report(today.isoformat())
    assert report.date == today.isoformat() and len(report.hours) == 24
    assert sum(hour.completed for hour in report.hours) >= 1
    own = admin.server_stats(backend.server_id)
    assert (own.tasks_processed, own.success_count, own.success_rate) == (1, 1, 1.0)

    balance = user.load_balancer()
    assert balance.server_distribution[backend.server_id].weight == 1
    previous = balance.algorithm
    try:
        chosen = admin.set_algorithm("round-robin")
        assert (chosen.message, chosen.algorithm) == ("Load balancer algorithm updated", "round-robin")
        assert user.load_balancer().algorithm == "round-robin"
    finally:
        admin.set_algorithm(previous)


def test_path_ids_stay_one_segment(user: Client) -> None:
    # Unescaped, "?" would start a query and this would read task "a" (404). Escaped, the
    # whole id reaches the route, which refuses its characters as malformed.
    with pytest.raises(BadRequest) as caught:
        user.get_task("a?b")
    assert caught.value.details.startswith("Invalid task id")
    with pytest.raises(ValueError, match="empty"):
        user.get_task("")

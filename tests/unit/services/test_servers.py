"""Server services on a real store with a fake clock: registration, heartbeats, maintenance,
removal; what each does to the fleet and its tasks."""

from __future__ import annotations

import pytest

from core.domain.auth import SERVICE, Principal
from core.domain.models import ServerStatus, TaskStatus
from core.domain.schemas import EndpointsBody, Heartbeat, Maintenance, RegisterServer
from core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from core.services import servers
from core.services.context import Context
from tests.unit.services.conftest import ADMIN_USER, ALICE, add_server, drain_all, submit
from tests.unit.services.fakes import FakeClock, RecordingQueue


def registration(server_id: str = "gpu-1", **endpoints: str) -> RegisterServer:
    urls = {"predict": "http://127.0.0.1:9/predict", "health": "http://127.0.0.1:9/health", **endpoints}
    return RegisterServer(id=server_id, name=server_id, endpoints=EndpointsBody(**urls), max_concurrent=2)


def test_a_registered_server_is_stored_checked_and_given_a_token(
    ctx: Context, queue: RecordingQueue, clock: FakeClock
) -> None:
    server, token = servers.register_server(ctx, ADMIN_USER, registration())

    assert ctx.store.get_server("gpu-1") == server
    assert server.registered_at == clock.now and server.max_concurrent == 2
    assert queue.checks == ["gpu-1"] and queue.capacity_signals == 1
    assert token.count(".") == 2  # a JWT


def test_registering_an_id_twice_is_a_conflict_and_keeps_the_first(ctx: Context) -> None:
    first, _ = servers.register_server(ctx, ADMIN_USER, registration())
    with pytest.raises(ConflictError):
        servers.register_server(ctx, ADMIN_USER, registration(predict="http://127.0.0.1:10/other"))
    assert ctx.store.get_server("gpu-1") == first


def test_a_metadata_endpoint_is_refused_and_nothing_stored(ctx: Context, queue: RecordingQueue) -> None:
    with pytest.raises(ValidationError, match=r"endpoints\.health"):
        servers.register_server(ctx, ADMIN_USER, registration(health="http://169.254.169.254/health"))
    assert ctx.store.list_servers() == [] and queue.checks == []


def test_only_an_admin_registers(ctx: Context) -> None:
    with pytest.raises(ForbiddenError):
        servers.register_server(ctx, ALICE, registration())
    assert ctx.store.list_servers() == []


def test_heartbeats_move_a_server_through_its_health_states(ctx: Context, clock: FakeClock) -> None:
    add_server(ctx, "gpu-1")
    own = Principal(sub="server:gpu-1", roles=frozenset({SERVICE}), server_id="gpu-1")

    unhealthy = Heartbeat(status="unhealthy")
    assert servers.heartbeat(ctx, own, "gpu-1", unhealthy).status is ServerStatus.DEGRADED
    servers.heartbeat(ctx, own, "gpu-1", unhealthy)
    assert servers.heartbeat(ctx, own, "gpu-1", unhealthy).status is ServerStatus.OFFLINE
    servers.heartbeat(ctx, own, "gpu-1", Heartbeat(active_tasks=0))
    clock.advance(10)
    back = servers.heartbeat(ctx, own, "gpu-1", Heartbeat(metrics={"gpu": 0.5}))
    assert back.status is ServerStatus.ONLINE and back.last_heartbeat == clock.now
    assert back.reported == {"gpu": 0.5}


def test_a_server_cannot_heartbeat_for_another(ctx: Context) -> None:
    add_server(ctx, "gpu-1")
    add_server(ctx, "gpu-2")
    other = Principal(sub="server:gpu-2", roles=frozenset({SERVICE}), server_id="gpu-2")
    with pytest.raises((ForbiddenError, NotFoundError)):
        servers.heartbeat(ctx, other, "gpu-1", Heartbeat())
    server = ctx.store.get_server("gpu-1")
    assert server is not None and server.last_heartbeat is None


def test_maintenance_keeps_tasks_off_and_ends_where_the_health_says(ctx: Context) -> None:
    add_server(ctx, "gpu-1")
    servers.set_maintenance(ctx, ADMIN_USER, "gpu-1", Maintenance(maintenance=True, reason="driver update"))
    task = submit(ctx)
    assert drain_all(ctx) == []

    servers.record_check(ctx, "gpu-1", True)  # observed, but maintenance is the operator's call
    server = ctx.store.get_server("gpu-1")
    assert server is not None and server.status is ServerStatus.MAINTENANCE

    ended = servers.set_maintenance(ctx, ADMIN_USER, "gpu-1", Maintenance(maintenance=False))
    assert ended.status is ServerStatus.ONLINE and ended.maintenance_reason is None
    assert [a.task.id for a in drain_all(ctx)] == [task.id]


def test_unregistering_requeues_the_servers_tasks(ctx: Context) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    drain_all(ctx)

    servers.unregister_server(ctx, ADMIN_USER, "gpu-1")

    assert ctx.store.get_server("gpu-1") is None
    requeued = ctx.store.get_task(task.id)
    assert requeued is not None and requeued.status is TaskStatus.PENDING
    assert requeued.error == "Server gpu-1 was unregistered"
    with pytest.raises(NotFoundError):
        servers.unregister_server(ctx, ADMIN_USER, "gpu-1")

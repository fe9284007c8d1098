"""The asynchronous client (`taskgate.async_client.AsyncClient`) and the sync client's newer
calls against a real `taskgate serve` and real mock backends on loopback: task lists and
their pages, the queue, webhook deliveries, server administration, errors from real replies."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator

import pytest

from taskgate.async_client import AsyncClient
from taskgate.client import Client
from taskgate.errors import Conflict, Forbidden, NotFound
from taskgate.models import ServerStatus, TaskCreated, TaskStatus

from .fleet import Fleet, Gateway, Mock, start_gateway
from .harness import HELD, unique


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("async-client"), spares=1) as gateway:
        yield gateway


@pytest.fixture
def fleet(gateway: Gateway) -> Iterator[Fleet]:
    with Fleet(gateway) as fleet:
        yield fleet


def test_a_task_carried_through_by_the_async_client(fleet: Fleet) -> None:
    fleet.add(Mock(mode="async", delay_ms=600, progress_steps=2))

    async def run() -> None:
        async with AsyncClient(fleet.gateway.base, fleet.owner) as client:
            created = await client.create_task("e2e-async", {"n": 1}, 2, capabilities=[fleet.capability])
            assert isinstance(created, TaskCreated)
            fleet.task_ids.append(created.id)
            seen: list[int] = []
            done = await client.wait(created.id, timeout=20, on_progress=lambda t: seen.append(t.progress))
            assert (done.status, done.result["echo"], done.priority) == (TaskStatus.COMPLETED, {"n": 1}, 2)
            assert seen == sorted(seen) and seen[-1] == 100
            assert await client.get_task(created.id) == done
            inline = await client.create_task(
                "e2e-async", {"n": 2}, capabilities=[fleet.capability], async_=False
            )
            fleet.task_ids.append(inline.id)
            assert inline.status is TaskStatus.COMPLETED

    asyncio.run(run())
    fleet.assert_settled()


def test_lists_pages_and_the_queue_from_both_clients(fleet: Fleet) -> None:
    with Client(fleet.gateway.base, fleet.owner) as client:
        ids = [client.create_task("e2e-list", {}, p, capabilities=[HELD]).id for p in (1, 8, 3)]
        page = client.list_tasks(status="PENDING", limit=2)
        assert [t.id for t in page.tasks] == ids[::-1][:2] and page.next_cursor is not None
        assert [t.id for t in client.iter_tasks(page_size=1)] == ids[::-1]
        queue = client.queue_stats()
        by_priority = {p.priority: p.count for p in queue.pending_by_priority}
        assert queue.pending >= 3 and by_priority[8] >= 1 and by_priority[3] >= 1
        assert [p.priority for p in queue.pending_by_priority] == sorted(by_priority, reverse=True)

    async def run() -> list[str]:
        async with AsyncClient(fleet.gateway.base, fleet.owner) as client:
            listed = [t.id async for t in client.iter_tasks(status="PENDING", page_size=2)]
            for task_id in ids:
                await client.cancel_task(task_id)
            with pytest.raises(Conflict):
                await client.cancel_task(ids[0])
            return listed

    assert asyncio.run(run()) == ids[::-1]
    with Client(fleet.gateway.base, fleet.owner) as client:
        assert {t.status for t in client.iter_tasks()} == {TaskStatus.CANCELLED}


def test_webhook_deliveries_of_a_task_without_a_webhook_are_none(fleet: Fleet) -> None:
    with Client(fleet.gateway.base, fleet.owner) as client:
        task_id = client.create_task("e2e-hooks", {}, capabilities=[HELD]).id
        shown = client.webhook_deliveries(task_id)
        assert (shown.task_id, shown.webhook, shown.deliveries) == (task_id, None, [])
        client.cancel_task(task_id)
    with Client(fleet.gateway.base, fleet.api.user()) as stranger, pytest.raises(NotFound):
        stranger.webhook_deliveries(task_id)


def test_server_administration_and_statistics_with_the_async_client(fleet: Fleet) -> None:
    (backend,) = fleet.start(Mock())
    group = unique("group")

    async def run() -> None:
        async with AsyncClient(fleet.gateway.base, fleet.api.admin) as admin:
            registered = await admin.register_server(
                "async-e2e",
                backend.endpoints,
                id=backend.server_id,
                groups=[group],
                capabilities=[fleet.capability],
            )
            fleet.server_ids.append(registered.server_id)
            on = await admin.set_maintenance(registered.server_id, reason="swap")
            assert (on.status, on.maintenance_reason) == (ServerStatus.MAINTENANCE, "swap")
            (server,) = await admin.list_servers(group=group)
            assert server.status is ServerStatus.MAINTENANCE
            await admin.set_maintenance(registered.server_id, False)
            stats = await admin.task_stats(datetime.datetime.now(datetime.UTC).date())
            assert len(stats.hourly_trend) == 24
            assert (await admin.server_stats(registered.server_id)).server_id == registered.server_id
            assert (await admin.load_balancer()).algorithm
            gone = await admin.unregister_server(registered.server_id)
            assert gone.message == "Server unregistered"
            fleet.server_ids.remove(registered.server_id)
            assert await admin.list_servers(group=group) == []
        async with AsyncClient(fleet.gateway.base, fleet.owner) as user:
            with pytest.raises(Forbidden):
                await user.list_servers()

    asyncio.run(run())

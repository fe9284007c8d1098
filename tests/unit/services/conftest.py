"""Service tests: the services and the sans-IO work loops on a real store, with a fake clock,
a recording queue and a scripted transport. No HTTP, no processes, no sleeps.

`store` is the in-memory store (core/local/memory), which passes the same storage contract as
SQLite and DynamoDB (tests/contract): no file, no emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.config import Config
from core.domain.auth import ADMIN, USER, Principal
from core.domain.models import Endpoints, Server, Task
from core.domain.schemas import CreateTask
from core.local.memory import MemoryData, MemoryStore
from core.ports.storage import Store
from core.services import tasks, work
from core.services.context import Context
from core.services.dispatch import Assignment
from tests.unit.services.fakes import FakeClock, RecordingQueue, RecordingTelemetry, ScriptedTransport

START = 1_700_000_000_000  # epoch ms
ALICE = Principal(sub="alice", roles=frozenset({USER}))
ADMIN_USER = Principal(sub="root", roles=frozenset({ADMIN}))


@pytest.fixture
def store() -> Iterator[Store]:
    opened = MemoryStore(MemoryData())
    yield opened
    opened.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def telemetry() -> RecordingTelemetry:
    return RecordingTelemetry()


@pytest.fixture
def ctx(store: Store, queue: RecordingQueue, clock: FakeClock, telemetry: RecordingTelemetry) -> Context:
    # fleet_cache_ms=0: every read of the fleet sees the store as it is (the cache has its own tests).
    config = Config(
        jwt_secret="unit-test-signing-secret-of-32-bytes!",
        fleet_cache_ms=0,
        public_url="http://127.0.0.1:8787",
    )
    return Context(store=store, queue=queue, config=config, clock=clock, telemetry=telemetry)


@pytest.fixture
def transport() -> ScriptedTransport:
    return ScriptedTransport()


def add_server(ctx: Context, server_id: str, **fields: object) -> Server:
    """A registered, online server on loopback addresses (no test resolves or calls them)."""
    server = Server(
        id=server_id,
        name=server_id,
        endpoints=Endpoints(
            predict=f"http://127.0.0.1:9/{server_id}/predict",
            health=f"http://127.0.0.1:9/{server_id}/health",
        ),
        registered_at=ctx.now(),
        **fields,  # type: ignore[arg-type]
    )
    ctx.store.put_server(server)
    ctx.fleet.invalidate()
    return server


def submit(ctx: Context, priority: int = 5, **fields: Any) -> Task:
    """Alice's new PENDING task."""
    return tasks.create_task(ctx, ALICE, CreateTask(type="image", priority=priority, payload={}, **fields))


def drain_all(ctx: Context, batch: int = 50, **kwargs: Any) -> list[Assignment]:
    """The assignments one drain makes (their predict calls not made)."""
    started: list[Assignment] = []
    work.drain(ctx, batch, started.append, **kwargs)
    return started

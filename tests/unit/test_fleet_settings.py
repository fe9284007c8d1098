"""The balancing algorithm as dispatch reads it: cached per process for FLEET_CACHE, kept when
the fleet view is invalidated (every drain does), and an admin's change reaching this process
at once and every other within FLEET_CACHE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Config
from core.domain.auth import ADMIN, Principal
from core.domain.models import Server
from core.domain.schemas import SetAlgorithm
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.services import dispatch, stats
from core.services.context import Context

ADMIN_P = Principal("root", frozenset({ADMIN}))
START_MS = 1_704_557_340_000


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class CountingStore(SqliteStore):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.setting_reads = 0
        self.fleet_reads = 0

    def get_setting(self, name: str) -> object:
        self.setting_reads += 1
        return super().get_setting(name)

    def list_servers(self) -> list[Server]:
        self.fleet_reads += 1
        return super().list_servers()


@pytest.fixture
def clock() -> Clock:
    return Clock(START_MS)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    opened = CountingStore(str(tmp_path / "db"))
    yield opened
    opened.close()


def process(store: SqliteStore, clock: Clock) -> Context:
    config = Config.from_env({}, jwt_secret="unit-test-secret-" * 4)
    assert config.fleet_cache_ms == 1_000
    return Context(store=store, queue=CallbackQueue(), config=config, clock=clock)


def test_invalidating_the_fleet_keeps_the_algorithm_until_fleet_cache_passes(
    store: CountingStore, clock: Clock
) -> None:
    # GIVEN a dispatcher that read the algorithm once
    ctx = process(store, clock)
    assert dispatch.algorithm(ctx) == "least-connections"
    assert store.setting_reads == 1

    # WHEN drains invalidate its fleet view within FLEET_CACHE
    for _ in range(3):
        ctx.fleet.invalidate()
        ctx.fleet.servers()
        clock.now_ms += 300
        dispatch.algorithm(ctx)

    # THEN the fleet is read each time, the algorithm not again
    assert (store.fleet_reads, store.setting_reads) == (3, 1)
    # and once FLEET_CACHE has passed, it is read again
    clock.now_ms += 100
    dispatch.algorithm(ctx)
    assert store.setting_reads == 2


def test_an_admins_change_is_used_at_once_here_and_within_fleet_cache_elsewhere(
    store: CountingStore, clock: Clock
) -> None:
    # GIVEN two processes that dispatch with the default algorithm
    here, elsewhere = process(store, clock), process(store, clock)
    assert dispatch.algorithm(here) == dispatch.algorithm(elsewhere) == "least-connections"

    # WHEN an admin sets p2c through the first
    clock.now_ms += 10
    stats.set_algorithm(here, ADMIN_P, SetAlgorithm(algorithm="p2c"))

    # THEN the first uses it at once; the other within FLEET_CACHE (1 s), even though its
    # fleet view is invalidated meanwhile
    assert dispatch.algorithm(here) == "p2c"
    elsewhere.fleet.invalidate()
    clock.now_ms += 989
    assert dispatch.algorithm(elsewhere) == "least-connections"
    clock.now_ms += 1
    assert dispatch.algorithm(elsewhere) == "p2c"

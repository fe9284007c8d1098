"""Rate limits under concurrency, on every adapter: many requests at once from one principal
get exactly the limit through, whether they share one Store (one process, one Lambda
container) or each instance has its own (several processes or Lambdas)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.config import Config, RateLimits
from core.domain import auth
from core.errors import RateLimitedError
from core.local.queue import CallbackQueue
from core.ports.storage import Store
from core.services import ratelimit
from core.services.context import Context

from .conftest import StoreFactory
from .factories import run_concurrently, split

SECRET = "contract-test-secret-" * 4
WINDOW_START_MS = 1_704_557_340_000  # a window boundary: 1704557340 = 28409289 * 60
ALICE = auth.Principal(sub="alice", roles=frozenset({auth.USER}))
BOB = auth.Principal(sub="bob", roles=frozenset({auth.USER}))

ContextsFor = Callable[[int], list[Context]]


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def clock() -> Clock:
    # 15 s into the window, so every thread is in the same one whatever the wall clock says
    return Clock(WINDOW_START_MS + 15_000)


@pytest.fixture(params=["shared", "separate"])
def contexts_for(
    request: pytest.FixtureRequest, store: Store, open_store: StoreFactory, clock: Clock
) -> ContextsFor:
    """n Contexts with a task creation limit of 50: all on one Store, or on 4 instances."""
    config = Config.from_env({}, jwt_secret=SECRET, rate_limits=RateLimits(task_create=50))
    stores = [store] if request.param == "shared" else [store, *(open_store() for _ in range(3))]

    def contexts(n: int) -> list[Context]:
        return [
            Context(store=stores[i % len(stores)], queue=CallbackQueue(), config=config, clock=clock)
            for i in range(n)
        ]

    return contexts


def test_100_concurrent_requests_let_exactly_50_through(contexts_for: ContextsFor) -> None:
    # GIVEN a limit of 50 task creations a minute
    contexts = contexts_for(100)

    # WHEN alice sends 100 at once
    outcomes = run_concurrently(100, lambda i: ratelimit.check(contexts[i], ALICE, "task_create"))

    # THEN exactly 50 pass, each with a distinct remaining count, and 50 are refused
    allowed, refused = split(outcomes, RateLimitedError)
    assert (len(allowed), len(refused)) == (50, 50)
    assert sorted(o.value.remaining for o in allowed) == list(range(50))
    # each told to come back once its own excess has slid out of the window (past its end: 45 s)
    assert all(isinstance(o.error, RateLimitedError) and 45 < o.error.retry_after_s <= 105 for o in refused)


def test_two_principals_do_not_share_a_window(contexts_for: ContextsFor) -> None:
    # GIVEN alice and bob, 60 requests each, all at once
    contexts = contexts_for(120)

    def hit(i: int) -> ratelimit.RateDecision | None:
        return ratelimit.check(contexts[i], ALICE if i % 2 else BOB, "task_create")

    outcomes = run_concurrently(120, hit)

    # THEN each gets its own 50
    for parity in (0, 1):
        allowed, refused = split([o for o in outcomes if o.index % 2 == parity], RateLimitedError)
        assert (len(allowed), len(refused)) == (50, 10)


def test_the_window_slides_across_its_edge(contexts_for: ContextsFor, clock: Clock) -> None:
    # GIVEN alice used up her window with 60 concurrent requests (50 served)
    contexts = contexts_for(60)
    outcomes = run_concurrently(60, lambda i: ratelimit.check(contexts[i], ALICE, "task_create"))
    assert len(split(outcomes, RateLimitedError)[0]) == 50
    # WHEN the next window begins and she sends 60 more: none pass (fixed windows let 50 more
    # through at once: twice the limit across the edge)
    clock.now_ms = WINDOW_START_MS + 60_000
    outcomes = run_concurrently(60, lambda i: ratelimit.check(contexts[i], ALICE, "task_create"))
    assert split(outcomes, RateLimitedError)[0] == []
    # THEN half a window later, half of the earlier 50 has slid out: exactly 25 pass
    clock.now_ms = WINDOW_START_MS + 90_000
    outcomes = run_concurrently(60, lambda i: ratelimit.check(contexts[i], ALICE, "task_create"))
    allowed, refused = split(outcomes, RateLimitedError)
    assert (len(allowed), len(refused)) == (25, 35)
    assert {o.value.reset_s for o in allowed} == {WINDOW_START_MS // 1000 + 120}


def test_instances_leasing_blocks_at_once_never_pass_the_limit(
    contexts_for: ContextsFor, store: Store
) -> None:
    # GIVEN 4 processes, each serving many of alice's requests (so each leases blocks of 2)
    contexts = contexts_for(4)

    # WHEN she sends 100 at once, 25 to each
    outcomes = run_concurrently(100, lambda i: ratelimit.check(contexts[i % 4], ALICE, "task_create"))

    # THEN at most the limit pass, and no fewer than the limit less one unused leased hit per
    # process (the documented bound: the cap less one)
    allowed, _ = split(outcomes, RateLimitedError)
    assert 50 - 4 <= len(allowed) <= 50
    window = (WINDOW_START_MS + 15_000) // 60_000
    assert len(allowed) <= store.rate_window_hits(f"alice#task_create#{window}") <= 50

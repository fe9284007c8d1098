"""Rate-limit leases: a process serving many requests of one principal counts them in blocks
taken in one ADD each, and all instances together still never admit more than the limit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Config, RateLimits
from core.domain import auth
from core.errors import RateLimitedError, UnavailableError
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.services import ratelimit
from core.services.context import Context
from core.services.rate_leases import lease_cap

SECRET = "unit-test-secret-" * 4
WINDOW_START_MS = 1_704_557_340_000  # a window boundary: 1704557340 = 28409289 * 60
WINDOW = WINDOW_START_MS // 60_000
RESET_S = WINDOW_START_MS // 1000 + 60
ALICE = auth.Principal(sub="alice", roles=frozenset({auth.USER}))
KEY = f"alice#default#{WINDOW}"


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class CountingStore(SqliteStore):
    """Records the amount of every ADD to a rate window."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.adds: list[int] = []

    def hit_rate_window(self, key: str, *, expires_at: int, amount: int = 1) -> int:
        self.adds.append(amount)
        return super().hit_rate_window(key, expires_at=expires_at, amount=amount)


@pytest.fixture
def clock() -> Clock:
    return Clock(WINDOW_START_MS + 15_000)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    opened = CountingStore(str(tmp_path / "db"))
    yield opened
    opened.close()


def instance(store: SqliteStore, clock: Clock, default: int = 100) -> Context:
    """One process (a Lambda container, a `taskgate serve`): its own Context and leases."""
    config = Config.from_env({}, jwt_secret=SECRET, rate_limits=RateLimits(default=default))
    return Context(store=store, queue=CallbackQueue(), config=config, clock=clock)


def remaining(ctx: Context) -> int:
    decision = ratelimit.check(ctx, ALICE, "default")
    assert decision is not None
    return decision.remaining


def shared_count(store: SqliteStore) -> int:
    return store.rate_window_hits(KEY)


def test_the_cap_is_a_twentieth_of_the_limit_and_at_least_one() -> None:
    assert [lease_cap(n) for n in (1, 39, 40, 50, 100, 1000)] == [1, 1, 2, 2, 5, 50]


def test_blocks_grow_from_one_to_the_cap_and_headers_count_every_request(
    store: CountingStore, clock: Clock
) -> None:
    # GIVEN a limit of 100 a minute (blocks of at most 5)
    ctx = instance(store, clock)

    # WHEN alice sends 20 requests to one process
    seen = [remaining(ctx) for _ in range(20)]

    # THEN each is counted in her headers as if counted alone
    assert seen == list(range(99, 79, -1))
    # from blocks of 1, 2, 4, then 5: 6 store requests for 20, 22 hits counted (2 not used yet)
    assert store.adds == [1, 2, 4, 5, 5, 5]
    assert shared_count(store) == 22


def test_a_limit_under_40_counts_every_request_in_the_store(store: CountingStore, clock: Clock) -> None:
    ctx = instance(store, clock, default=30)
    for _ in range(10):
        ratelimit.check(ctx, ALICE, "default")
    assert store.adds == [1] * 10


def test_the_cap_bounds_the_block(store: CountingStore, clock: Clock) -> None:
    ctx = instance(store, clock, default=1000)
    for _ in range(200):
        ratelimit.check(ctx, ALICE, "default")
    assert store.adds == [1, 2, 4, 8, 16, 32, 50, 50, 50]


def test_two_instances_never_admit_more_than_the_limit(store: CountingStore, clock: Clock) -> None:
    # GIVEN two processes on one store, a limit of 100
    first, second = instance(store, clock), instance(store, clock)
    served = {id(first): 0, id(second): 0}

    # WHEN alice sends 300 requests, spread unevenly between them (3 to the first for each 1
    # to the second, then the other way round)
    for n in range(300):
        ctx = (first if n % 4 else second) if n < 150 else (second if n % 4 else first)
        try:
            ratelimit.check(ctx, ALICE, "default")
            served[id(ctx)] += 1
        except RateLimitedError:
            pass

    # THEN never more than the limit together, and what is lost to unused leases is within
    # the documented bound (cap - 1 per process)
    total = sum(served.values())
    assert 100 - 2 * (lease_cap(100) - 1) <= total <= 100
    assert shared_count(store) <= 100


def test_another_instance_sees_the_lease_as_used(store: CountingStore, clock: Clock) -> None:
    first, second = instance(store, clock), instance(store, clock)
    assert [remaining(first) for _ in range(12)][-1] == 88  # blocks 1, 2, 4, 5: all used
    assert remaining(second) == 87
    assert remaining(first) == 86  # a block of 5: its 4 unused hits count for everyone
    assert remaining(second) == 81


def test_a_block_past_the_limit_is_cut_and_the_excess_given_back(store: CountingStore, clock: Clock) -> None:
    # GIVEN this process served 7 of alice's requests (blocks 1, 2, 4: 3 hits left)
    ctx = instance(store, clock)
    for _ in range(4):
        ratelimit.check(ctx, ALICE, "default")
    assert shared_count(store) == 7
    # and other instances then counted 90 more
    store.hit_rate_window(KEY, expires_at=RESET_S + 60, amount=90)

    # WHEN she keeps calling this process
    served = 0
    with pytest.raises(RateLimitedError) as refused:
        for _ in range(20):
            ratelimit.check(ctx, ALICE, "default")
            served += 1

    # THEN its 3 leased hits are served, then a block of 5 of which 3 fit (2 given back), and
    # then she is refused: the window holds exactly the limit
    assert served == 6
    assert store.adds[3:] == [90, 5, -2, 1, -1]
    assert shared_count(store) == 100
    assert refused.value.decision.remaining == 0
    # 45 s to the window's edge, then a hundredth of the next window for one to slide out
    assert refused.value.retry_after_s == 46


def test_a_refused_block_is_given_back_whole(store: CountingStore, clock: Clock) -> None:
    ctx = instance(store, clock)
    for _ in range(2):
        ratelimit.check(ctx, ALICE, "default")
    store.hit_rate_window(KEY, expires_at=RESET_S + 60, amount=97)  # 100: full
    ratelimit.check(ctx, ALICE, "default")  # the last leased hit

    with pytest.raises(RateLimitedError):
        ratelimit.check(ctx, ALICE, "default")

    # it asked for its next block (the window looked nearly empty to it) and gave it all back
    assert store.adds[-2:] == [4, -4]
    assert shared_count(store) == 100


def test_a_new_window_starts_with_a_block_of_one_and_unused_hits_weigh_as_used(
    store: CountingStore, clock: Clock
) -> None:
    # GIVEN a process served 4 of alice's requests late in a window, leasing 7 (3 unused)
    ctx = instance(store, clock)
    clock.now_ms = WINDOW_START_MS + 59_000
    for _ in range(4):
        ratelimit.check(ctx, ALICE, "default")
    assert store.adds == [1, 2, 4]

    # WHEN the next window has begun (half a second in)
    clock.now_ms = WINDOW_START_MS + 60_500

    # THEN the old lease is not used: the first request takes a block of one in the new window,
    # and the 7 counted in the old one still weigh on it (7 * (1 - 0.5/60) + 1, rounded up)
    assert remaining(ctx) == 100 - 8
    assert store.adds == [1, 2, 4, 1]
    assert store.rate_window_hits(f"alice#default#{WINDOW + 1}") == 1


def test_threads_of_one_process_share_its_lease_and_never_pass_the_limit(
    store: CountingStore, clock: Clock
) -> None:
    # GIVEN one process (`taskgate serve` runs handlers on threads), a limit of 100
    ctx = instance(store, clock)
    served: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def client() -> None:
        start.wait()
        for _ in range(25):
            try:
                decision = ratelimit.check(ctx, ALICE, "default")
                assert decision is not None
                with lock:
                    served.append(decision.remaining)
            except RateLimitedError:
                with lock:
                    refused.append(1)

    # WHEN 8 threads send 25 requests each at once
    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN every request is served or refused, never more than the limit are served, and the
    # window counts exactly the served requests plus the leased hits not served yet: at most
    # one block's worth (racing threads take single hits while one takes a block)
    assert len(served) + len(refused) == 200
    lease = ctx.rate_leases._leases["alice#default"]
    assert 100 - (lease_cap(100) - 1) <= len(served) <= 100
    assert shared_count(store) == len(served) + lease.left
    assert lease.left <= lease_cap(100) - 1


def test_a_failed_store_request_does_not_stop_the_process_leasing(store: CountingStore, clock: Clock) -> None:
    # GIVEN the store fails alice's second ADD in this process
    ctx = instance(store, clock)
    ratelimit.check(ctx, ALICE, "default")
    real = store.hit_rate_window

    def failing(key: str, *, expires_at: int, amount: int = 1) -> int:
        raise UnavailableError("DynamoDB is throttling")

    store.hit_rate_window = failing  # type: ignore[method-assign]
    with pytest.raises(UnavailableError):
        ratelimit.check(ctx, ALICE, "default")
    store.hit_rate_window = real  # type: ignore[method-assign]

    # WHEN she calls again: THEN that request leads a block again (not a single hit forever)
    assert remaining(ctx) == 98
    assert remaining(ctx) == 97
    assert store.adds == [1, 2]

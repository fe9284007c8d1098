"""The indexed dispatch decision: `FleetView.order` and `balancer.first_choice` against the
full `balancer.order` they replace on the hot path."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import msgspec
import pytest

from core.domain import balancer
from core.domain.fleet_index import CapableGroup, Fenwick
from core.domain.models import Endpoints, Server, ServerStatus, Task
from core.services.fleet import FleetView

_BASE = Server(id="s", name="n", endpoints=Endpoints(predict="http://p", health="http://h"), registered_at=0)
CAPABILITIES = ["video", "image", "text"]


def server(id: str, **overrides: object) -> Server:
    return msgspec.structs.replace(_BASE, id=id, name=id, **overrides)


def task(*capabilities: str, previous: str | None = None) -> Task:
    return Task(
        id="t",
        owner="o",
        type="predict",
        priority=1,
        payload={},
        capabilities=sorted(capabilities),
        previous_server_id=previous,
        created_at=0,
        updated_at=0,
        queued_at=0,
    )


def random_fleet(rng: random.Random, size: int, *, full_share: float) -> list[Server]:
    fleet = []
    for i in range(size):
        limit = rng.randint(1, 8)
        full = rng.random() < full_share
        fleet.append(
            server(
                f"s{i:04d}",
                max_concurrent=limit,
                active_tasks=limit if full else rng.randint(0, limit - 1),
                capabilities=rng.sample(CAPABILITIES, k=rng.randint(1, 3)),
                priority=rng.randint(1, 5),
                latency_ewma_ms=rng.choice([None, rng.randint(1, 50)]),
                status=ServerStatus.ONLINE if rng.random() > 0.1 else ServerStatus.OFFLINE,
            )
        )
    return fleet


class FakeStore:
    """The two reads a FleetView makes."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = sorted(servers, key=lambda s: s.id)
        self.reads = 0

    def list_servers(self) -> list[Server]:
        self.reads += 1
        return list(self.servers)

    def get_setting(self, name: str) -> None:
        return None


def view(servers: list[Server]) -> FleetView:
    return FleetView(FakeStore(servers), ttl_ms=10**12, clock=lambda: 0)  # type: ignore[arg-type]


def test_fenwick_finds_the_kth_set_flag_through_updates() -> None:
    rng = random.Random(3)
    flags = [rng.randint(0, 1) for _ in range(37)]
    tree = Fenwick(flags)
    for _ in range(200):
        i = rng.randrange(len(flags))
        new = 1 - flags[i]
        tree.add(i, new - flags[i])
        flags[i] = new
        ones = [j for j, f in enumerate(flags) if f]
        assert tree.total == len(ones)
        assert [tree.kth(k) for k in range(len(ones))] == ones


@pytest.mark.parametrize("algorithm", ["round-robin", "least-connections", "response-time"])
@pytest.mark.parametrize("seed", range(5))
def test_first_choice_is_the_full_orders_first_also_with_full_servers(algorithm: str, seed: int) -> None:
    rng = random.Random(seed)
    fleet = random_fleet(rng, 60, full_share=0.4)
    for needed in ([], ["video"], ["image", "text"]):
        candidates = balancer.candidates(fleet, task(*needed))
        group = CapableGroup(
            [s for s in fleet if s.status is ServerStatus.ONLINE and set(needed) <= set(s.capabilities)]
        )
        for n in range(1, 40):
            expected = balancer.order(algorithm, candidates, sequence=lambda n=n: n, rng=random.Random(0))
            chosen = balancer.first_choice(algorithm, group, sequence=lambda n=n: n, rng=random.Random(0))
            assert chosen == (expected[0] if expected else None)


@pytest.mark.parametrize("seed", range(5))
def test_weighted_first_choice_follows_the_cycle_when_every_server_is_free(seed: int) -> None:
    rng = random.Random(seed)
    fleet = random_fleet(rng, 25, full_share=0.0)
    fleet = [msgspec.structs.replace(s, status=ServerStatus.ONLINE) for s in fleet]
    candidates = balancer.candidates(fleet, task())
    group = CapableGroup(fleet)
    for n in range(1, 120):
        expected = balancer.order("weighted-round-robin", candidates, sequence=lambda n=n: n, rng=rng)[0]
        assert (
            balancer.first_choice("weighted-round-robin", group, sequence=lambda n=n: n, rng=rng) == expected
        )


def test_weighted_first_choice_skips_full_servers_and_keeps_the_weights() -> None:
    fleet = [
        server("a", priority=3, max_concurrent=10),
        server("b", priority=1, max_concurrent=10),
        server("c", priority=2, max_concurrent=1, active_tasks=1),  # full
    ]
    group = CapableGroup(fleet)
    counter = itertools.count(1)
    picks = Counter(
        balancer.first_choice(
            "weighted-round-robin", group, sequence=counter.__next__, rng=random.Random(0)
        ).id  # type: ignore[union-attr]
        for _ in range(600)
    )
    assert set(picks) == {"a", "b"}
    assert picks["a"] > 2 * picks["b"]  # a keeps at least its 3:1 share over b


@pytest.mark.parametrize("algorithm", ["random", "p2c"])
def test_random_first_choices_are_spread_over_the_candidates_only(algorithm: str) -> None:
    fleet = [server(f"s{i}", max_concurrent=2, active_tasks=2 if i % 3 == 0 else 0) for i in range(9)]
    group = CapableGroup(fleet)
    rng = random.Random(5)
    picks = Counter(
        balancer.first_choice(algorithm, group, sequence=lambda: 1, rng=rng).id  # type: ignore[union-attr]
        for _ in range(3000)
    )
    free = {s.id for s in fleet if s.active_tasks < s.max_concurrent}
    # p2c breaks a tie of equal load by id, so the last free server never wins one.
    expected = free - {"s8"} if algorithm == "p2c" else free
    assert set(picks) == expected
    assert min(picks.values()) > 3000 / len(free) / 4  # none starved


def test_no_candidate_gives_nothing_and_one_candidate_draws_no_counter() -> None:
    def never() -> int:
        raise AssertionError("the shared counter was drawn for nothing to choose")

    empty = CapableGroup([server("a", max_concurrent=1, active_tasks=1)])
    assert balancer.first_choice("round-robin", empty, sequence=never, rng=random.Random()) is None
    single = CapableGroup([server("a", max_concurrent=1, active_tasks=1), server("b")])
    assert (
        balancer.first_choice("weighted-round-robin", single, sequence=never, rng=random.Random()).id == "b"
    )  # type: ignore[union-attr]


@pytest.mark.parametrize("algorithm", balancer.ALGORITHMS)
def test_view_order_tracks_slots_taken_and_freed(algorithm: str) -> None:
    """Claims through the view never go past maxConcurrent, and freed slots come back."""
    fleet = [server(f"s{i}", max_concurrent=3, capabilities=["video"]) for i in range(5)]
    fleet.append(server("other", max_concurrent=100, capabilities=["image"]))
    fleet_view = view(fleet)
    counter = itertools.count(1)
    rng = random.Random(1)
    taken: list[str] = []
    for _ in range(15):
        chosen = next(fleet_view.order(task("video"), algorithm, sequence=counter.__next__, rng=rng))
        fleet_view.adjust(chosen.id, +1)
        taken.append(chosen.id)
    assert Counter(taken) == {f"s{i}": 3 for i in range(5)}
    assert list(fleet_view.order(task("video"), algorithm, sequence=counter.__next__, rng=rng)) == []
    fleet_view.adjust("s2", -1)
    assert [s.id for s in fleet_view.order(task("video"), algorithm, sequence=counter.__next__, rng=rng)] == [
        "s2"
    ]


@pytest.mark.parametrize("algorithm", balancer.ALGORITHMS)
def test_view_order_lists_every_candidate_once_after_the_first(algorithm: str) -> None:
    """When the first claim fails the caller goes on: the rest is the full order, first left out."""
    fleet = random_fleet(random.Random(11), 40, full_share=0.3)
    expected = {s.id for s in balancer.candidates(fleet, task("video"))}
    got = [
        s.id for s in view(fleet).order(task("video"), algorithm, sequence=lambda: 7, rng=random.Random(2))
    ]
    assert len(got) == len(set(got))
    assert set(got) == expected


def test_view_order_leaves_out_excluded_and_tries_the_previous_server_last() -> None:
    fleet = [server(f"s{i}") for i in range(4)]
    order = view(fleet).order(
        task(), "least-connections", sequence=lambda: 1, rng=random.Random(), avoid={"s0"}, exclude={"s1"}
    )
    assert [s.id for s in order] == ["s2", "s3", "s0"]


def test_view_order_counts_the_shared_counter_once_per_decision() -> None:
    fleet = [server(f"s{i}") for i in range(4)]
    drawn: list[int] = []

    def sequence() -> int:
        drawn.append(len(drawn) + 1)
        return drawn[-1]

    listed = list(
        view(fleet).order(task(), "round-robin", sequence=sequence, rng=random.Random(), avoid={"s0"})
    )
    assert sorted(s.id for s in listed) == ["s0", "s1", "s2", "s3"]
    assert listed[-1].id == "s0"
    assert drawn == [1]


def test_view_leaves_out_an_ejected_server_and_offers_a_slow_start_share() -> None:
    # GIVEN (at time 0) s0 ejected, s1 in the first tenth of its slow start, s2 as usual
    fleet = [
        server("s0", ejected_until=5_000, slow_start_from=5_000),
        server("s1", max_concurrent=10, active_tasks=1, slow_start_from=0),
        server("s2"),
    ]
    fleet_view = view(fleet)

    # WHEN s2 just failed the task (tried last), THEN s0 is not tried at all and s1, whose one
    # slow-start slot is taken, neither
    order = fleet_view.order(
        task(), "least-connections", sequence=lambda: 1, rng=random.Random(), avoid={"s2"}
    )
    assert [s.id for s in order] == ["s2"]
    assert [fleet_view.slot_limit(s) for s in fleet] == [0, 1, 10]

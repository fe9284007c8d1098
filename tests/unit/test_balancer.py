"""Load balancing: candidate filtering, the order each algorithm tries servers in, EWMA, messages."""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from collections.abc import Callable

import msgspec
import pytest

from core.domain import balancer
from core.domain.models import Endpoints, Server, ServerStatus, Task

_BASE = Server(id="s", name="n", endpoints=Endpoints(predict="http://p", health="http://h"), registered_at=0)


def server(id: str, **overrides: object) -> Server:
    return msgspec.structs.replace(_BASE, id=id, name=id, **overrides)


def task(*capabilities: str, previous: str | None = None) -> Task:
    return Task(
        id="t",
        owner="o",
        type="predict",
        priority=1,
        payload={},
        capabilities=list(capabilities),
        previous_server_id=previous,
        created_at=0,
        updated_at=0,
        queued_at=0,
    )


def counter() -> Callable[[], int]:
    return itertools.count(1).__next__


def first_picks(algorithm: str, fleet: list[Server], picks: int, seed: int = 0) -> Counter[str]:
    sequence, rng = counter(), random.Random(seed)
    return Counter(balancer.order(algorithm, fleet, sequence=sequence, rng=rng)[0].id for _ in range(picks))


def first_picks_in_order(
    fleet: list[Server], picks: int, sequence: Callable[[], int] | None = None
) -> list[str]:
    sequence = sequence or counter()
    rng = random.Random(0)
    return [
        balancer.order("weighted-round-robin", fleet, sequence=sequence, rng=rng)[0].id for _ in range(picks)
    ]


def ids(servers: list[Server]) -> list[str]:
    return [s.id for s in servers]


def random_fleet(rng: random.Random, size: int) -> list[Server]:
    fleet = []
    for i in range(size):
        limit = rng.randint(1, 20)
        fleet.append(
            server(
                f"s{i:04d}",
                max_concurrent=limit,
                active_tasks=rng.randint(0, limit - 1),
                priority=rng.randint(1, 100),
                latency_ewma_ms=rng.choice([None, rng.randint(1, 900)]),
            )
        )
    rng.shuffle(fleet)
    return fleet


# Candidates


@pytest.mark.parametrize("status", list(ServerStatus))
def test_only_online_servers_are_candidates(status: ServerStatus) -> None:
    found = balancer.candidates([server("a", status=status)], task())
    assert ids(found) == (["a"] if status is ServerStatus.ONLINE else [])


def test_a_full_server_is_not_a_candidate() -> None:
    fleet = [
        server("full", max_concurrent=2, active_tasks=2),
        server("free", max_concurrent=2, active_tasks=1),
    ]
    assert ids(balancer.candidates(fleet, task())) == ["free"]


def test_capabilities_must_be_a_superset_of_the_tasks() -> None:
    fleet = [
        server("none"),
        server("gpu", capabilities=["gpu"]),
        server("both", capabilities=["video", "gpu"]),
        server("more", capabilities=["gpu", "video", "audio"]),
    ]
    assert ids(balancer.candidates(fleet, task())) == ["none", "gpu", "both", "more"]
    assert ids(balancer.candidates(fleet, task("gpu"))) == ["gpu", "both", "more"]
    assert ids(balancer.candidates(fleet, task("gpu", "video"))) == ["both", "more"]
    assert balancer.candidates(fleet, task("gpu", "lidar")) == []


# Round-robin


def test_round_robin_spreads_evenly() -> None:
    fleet = [server("c"), server("a"), server("b")]
    assert first_picks("round-robin", fleet, 30) == {"a": 10, "b": 10, "c": 10}


def test_round_robin_walks_the_ring_in_id_order() -> None:
    fleet = [server("c"), server("a"), server("b")]
    got = balancer.order("round-robin", fleet, sequence=lambda: 2, rng=random.Random(0))
    assert ids(got) == ["b", "c", "a"]


def test_round_robin_is_shared_by_concurrent_dispatchers() -> None:
    fleet = [server(name) for name in "abc"]
    sequence = counter()  # itertools.count: next() is atomic, as the store's counter is
    picks: Counter[str] = Counter()
    lock = threading.Lock()

    def dispatcher(seed: int) -> None:
        for _ in range(30):
            pick = balancer.order("round-robin", fleet, sequence=sequence, rng=random.Random(seed))[0]
            with lock:
                picks[pick.id] += 1

    threads = [threading.Thread(target=dispatcher, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert picks == {"a": 40, "b": 40, "c": 40}


def test_no_candidate_or_a_single_one_does_not_draw_from_the_counter() -> None:
    def sequence() -> int:
        raise AssertionError("the shared counter was drawn")

    for algorithm in ("round-robin", "weighted-round-robin"):
        assert balancer.order(algorithm, [], sequence=sequence, rng=random.Random(0)) == []
        assert ids(balancer.order(algorithm, [server("a")], sequence=sequence, rng=random.Random(0))) == ["a"]


@pytest.mark.parametrize("algorithm", [a for a in balancer.ALGORITHMS if "round-robin" not in a])
def test_other_algorithms_never_draw_from_the_counter(algorithm: str) -> None:
    def sequence() -> int:
        raise AssertionError("the shared counter was drawn")

    fleet = [server(name, active_tasks=i) for i, name in enumerate("abc")]
    assert len(balancer.order(algorithm, fleet, sequence=sequence, rng=random.Random(0))) == 3


# Weighted round-robin


@pytest.mark.parametrize("picks", [40, 400])
def test_weighted_round_robin_follows_weights_3_to_1(picks: int) -> None:
    got = first_picks("weighted-round-robin", [server("a", priority=3), server("b", priority=1)], picks)
    assert got["a"] == pytest.approx(picks * 3 / 4, rel=0.1)
    assert got["b"] == pytest.approx(picks / 4, rel=0.1)


def test_weighted_round_robin_is_exact_over_any_cycle() -> None:
    fleet = [server("a", priority=3), server("b", priority=1)]
    for start in range(1, 9):
        sequence = itertools.count(start).__next__
        assert Counter(first_picks_in_order(fleet, 40, sequence)) == {"a": 30, "b": 10}


def test_weighted_round_robin_1_1_2() -> None:
    fleet = [server("a", priority=1), server("b", priority=1), server("c", priority=2)]
    assert first_picks("weighted-round-robin", fleet, 400) == {"a": 100, "b": 100, "c": 200}


def test_weighted_round_robin_interleaves() -> None:
    fleet = [server("a", priority=3), server("b", priority=1)]
    assert "".join(first_picks_in_order(fleet, 8)) == "aabaaaba"
    fleet = [server("a", priority=4), server("b", priority=3), server("c", priority=2)]
    assert "".join(first_picks_in_order(fleet, 9)) == "abcabacba"  # as nginx's smooth round-robin


def test_weighted_round_robin_follows_large_random_weights() -> None:
    rng = random.Random(7)
    fleet = [server(f"s{i:03d}", priority=rng.randint(1, 100)) for i in range(200)]
    total = sum(s.priority for s in fleet)
    got = first_picks("weighted-round-robin", fleet, total)
    assert got == {s.id: s.priority for s in fleet}


def test_weighted_round_robin_tries_the_rest_heaviest_first() -> None:
    fleet = [
        server("a", priority=1),
        server("b", priority=5),
        server("c", priority=3),
        server("d", priority=3),
    ]
    got = balancer.order("weighted-round-robin", fleet, sequence=lambda: 1, rng=random.Random(0))
    assert ids(got)[0] == "b"
    assert ids(got)[1:] == ["c", "d", "a"]


# Least connections, response time, power of two choices, random


def test_least_connections_picks_the_emptiest() -> None:
    fleet = [
        server("busy", active_tasks=5),
        server("idle-b", active_tasks=0),
        server("one-of-2", active_tasks=1, max_concurrent=2),
        server("one-of-10", active_tasks=1, max_concurrent=10),
        server("two-of-100", active_tasks=2, max_concurrent=100),
        server("idle-a", active_tasks=0),
    ]
    got = balancer.order("least-connections", fleet, sequence=counter(), rng=random.Random(0))
    # Connections first, the load ratio only between equals.
    assert ids(got) == ["idle-a", "idle-b", "one-of-10", "one-of-2", "two-of-100", "busy"]


def test_response_time_prefers_unmeasured_then_fastest() -> None:
    fleet = [
        server("slow", latency_ewma_ms=900),
        server("fast", latency_ewma_ms=20),
        server("new-busy", active_tasks=3),
        server("new-idle"),
        server("fast-busier", latency_ewma_ms=20, active_tasks=2),
    ]
    got = balancer.order("response-time", fleet, sequence=counter(), rng=random.Random(0))
    assert ids(got) == ["new-idle", "new-busy", "fast", "fast-busier", "slow"]


def test_p2c_never_puts_the_more_loaded_of_two_first() -> None:
    light, heavy = server("light", active_tasks=1), server("heavy", active_tasks=8)
    rng = random.Random(3)
    for _ in range(50):
        got = balancer.order("p2c", [heavy, light], sequence=counter(), rng=rng)
        assert ids(got) == ["light", "heavy"]


def test_p2c_favours_lightly_loaded_servers() -> None:
    fleet = [server(f"s{load}", active_tasks=load, max_concurrent=10) for load in range(10)]
    got = first_picks("p2c", fleet, 5000, seed=11)
    assert "s9" not in got  # the most loaded loses every draw it is in
    # The i-th lightest of n wins (n - 1 - i) of the n (n - 1) / 2 pairs: 18 % for s0, 2 % for s8.
    assert got["s0"] > got["s4"] > got["s8"]
    assert got["s0"] == pytest.approx(5000 * 9 / 45, rel=0.15)


def test_p2c_puts_the_losing_draw_second_then_the_rest_by_load() -> None:
    fleet = [server(f"s{load}", active_tasks=load, max_concurrent=10) for load in range(6)]
    rng = random.Random(5)
    for _ in range(50):
        got = ids(balancer.order("p2c", fleet, sequence=counter(), rng=rng))
        assert got[0] < got[1]  # ids sort as loads do here
        assert got[2:] == sorted(got[2:])


def test_random_covers_every_server() -> None:
    fleet = [server(name) for name in "abcde"]
    got = first_picks("random", fleet, 500, seed=42)
    assert set(got) == set("abcde")
    assert min(got.values()) > 60


# Properties of every algorithm


@pytest.mark.parametrize("algorithm", balancer.ALGORITHMS)
def test_every_algorithm_returns_a_permutation(algorithm: str) -> None:
    rng = random.Random(algorithm)
    sequence = counter()
    for _ in range(200):
        fleet = random_fleet(rng, rng.randint(0, 30))
        got = balancer.order(algorithm, fleet, sequence=sequence, rng=rng)
        assert sorted(ids(got)) == sorted(ids(fleet))
        assert all(any(s is g for s in fleet) for g in got)


@pytest.mark.parametrize("algorithm", balancer.ALGORITHMS)
def test_avoid_puts_the_previous_server_last(algorithm: str) -> None:
    rng = random.Random(1)
    sequence = counter()
    for _ in range(100):
        fleet = random_fleet(rng, rng.randint(2, 12))
        avoided = rng.choice(fleet).id
        got = balancer.order(algorithm, fleet, sequence=sequence, rng=rng, avoid={avoided})
        assert ids(got)[-1] == avoided
        assert sorted(ids(got)) == sorted(ids(fleet))


@pytest.mark.parametrize("algorithm", balancer.ALGORITHMS)
def test_avoiding_an_absent_server_changes_nothing(algorithm: str) -> None:
    fleet = random_fleet(random.Random(2), 8)
    plain = balancer.order(algorithm, fleet, sequence=lambda: 5, rng=random.Random(9))
    avoiding = balancer.order(algorithm, fleet, sequence=lambda: 5, rng=random.Random(9), avoid={"gone"})
    assert ids(avoiding) == ids(plain)


def test_unknown_algorithm_is_an_error() -> None:
    with pytest.raises(ValueError, match="fastest"):
        balancer.order("fastest", [server("a")], sequence=counter(), rng=random.Random(0))
    with pytest.raises(ValueError):
        balancer.order("fastest", [], sequence=counter(), rng=random.Random(0))


def test_default_algorithm_is_known() -> None:
    assert balancer.DEFAULT_ALGORITHM in balancer.ALGORITHMS


# EWMA


def test_ewma_starts_at_the_first_observation() -> None:
    assert balancer.next_ewma(None, 120) == 120


def test_ewma_weighs_the_newest_observation_by_alpha() -> None:
    assert balancer.next_ewma(100, 200) == 130  # 0.3 * 200 + 0.7 * 100
    assert balancer.next_ewma(200, 100) == 170
    assert balancer.next_ewma(100, 100) == 100


def test_ewma_converges_and_ignores_negative_durations() -> None:
    value = 1000
    for _ in range(40):
        value = balancer.next_ewma(value, 50)
    assert value == pytest.approx(50, abs=1)  # integer rounding stops it within 1 ms
    assert balancer.next_ewma(None, -5) == 0


# Why a task waits


def test_why_waiting_names_capabilities_nobody_has() -> None:
    fleet = [server("a", capabilities=["gpu"]), server("b", capabilities=["audio"])]
    assert (
        balancer.why_waiting(fleet, task("gpu", "video", "lidar"))
        == "no registered server has capabilities: video, lidar"
    )
    assert balancer.why_waiting([], task("gpu")) == "no registered server has capabilities: gpu"
    assert balancer.why_waiting([], task()) == "no server is registered"


def test_why_waiting_when_capable_servers_are_not_online() -> None:
    fleet = [
        server("a", capabilities=["video"], status=ServerStatus.OFFLINE),
        server("b", capabilities=["video"], status=ServerStatus.MAINTENANCE),
        server("c", status=ServerStatus.ONLINE),
    ]
    assert balancer.why_waiting(fleet, task("video")) == "no online server has capabilities: video"


def test_why_waiting_when_capable_servers_are_full() -> None:
    full = {"max_concurrent": 2, "active_tasks": 2}
    fleet = [server(name, capabilities=["gpu"], **full) for name in "abc"] + [server("cpu")]
    assert balancer.why_waiting(fleet, task("gpu")) == "all 3 capable servers are busy"
    fleet.append(server("d", capabilities=["gpu"], status=ServerStatus.OFFLINE))
    assert (
        balancer.why_waiting(fleet, task("gpu")) == "all 3 capable servers are busy, and 1 more is not online"
    )


def test_why_waiting_when_capabilities_are_split_across_servers() -> None:
    fleet = [server("a", capabilities=["gpu"]), server("b", capabilities=["video"])]
    assert (
        balancer.why_waiting(fleet, task("gpu", "video"))
        == "no registered server has all of the capabilities: gpu, video"
    )

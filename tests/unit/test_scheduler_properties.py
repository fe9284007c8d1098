"""Property-based proof of the scheduler against the reference model (tests/unit/scheduling_model.py).

Hypothesis generates fleets (capability sets, slots, some servers offline), tasks (capability
sets, including ones no server has; owners; priorities; arrival order, ties included) and what
happens next (arrivals, completions, failed attempts with a backoff, the clock moving). After
every event the real scheduler makes one wake-up over a real store, and:

- each claim is the task the model would start next (so priority always comes first, then the
  owner with the fewest in flight, then the oldest ready task), on a server that can run it and
  has a free slot (never overbooked);
- after the wake-up the model starts nothing: no ready task could start on a free slot
  (work-conserving within one wake-up);
- the store's owner queues and in-flight counts equal the model's.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.local.memory import MemoryStore
from core.local.sqlite import SqliteStore
from core.ports.storage import Store
from tests.unit.scheduling_model import Fleet, follows_the_model, model_counts, store_counts

CAPABILITIES = ["a", "b", "c"]
OWNERS = ["alice", "bob", "carol", "dan"]

capability_sets = st.one_of(
    st.sampled_from([frozenset(), frozenset("a"), frozenset("ab"), frozenset("bc"), frozenset("abc")]),
    st.frozensets(st.sampled_from(CAPABILITIES), max_size=3),
)
# "z": a capability no server ever has (a typo in a batch).
task_capabilities = st.one_of(
    st.sampled_from([frozenset(), frozenset("a"), frozenset("b"), frozenset("ab"), frozenset("z")]),
    st.frozensets(st.sampled_from([*CAPABILITIES, "z"]), max_size=2),
)


@dataclass(frozen=True)
class Arrive:
    owner: str
    priority: int
    capabilities: frozenset[str]
    count: int


@dataclass(frozen=True)
class Finish:
    pick: int


@dataclass(frozen=True)
class Fail:
    pick: int
    backoff_ms: int


@dataclass(frozen=True)
class Tick:
    ms: int


events = st.one_of(
    st.builds(
        Arrive,
        st.sampled_from(OWNERS),
        st.integers(0, 3),
        task_capabilities,
        st.integers(1, 6),
    ),
    st.builds(
        Arrive,
        st.sampled_from(OWNERS),
        st.integers(0, 3),
        task_capabilities,
        st.integers(1, 6),
    ),
    st.builds(Finish, st.integers(0, 1_000)),
    st.builds(Fail, st.integers(0, 1_000), st.sampled_from([0, 50, 200])),
    st.builds(Tick, st.sampled_from([0, 1, 100])),
)
servers = st.lists(st.tuples(capability_sets, st.integers(1, 3)), min_size=1, max_size=4)


def run(
    store: Store,
    fleet_spec: list[tuple[frozenset[str], int]],
    offline: int,
    history: list[object],
    owner_limit: int,
) -> None:
    """Drive the real scheduler on `store` through `history`, checking it after every wake-up."""
    fleet = Fleet(store, owner_limit=owner_limit)
    for i, (capabilities, slots) in enumerate(fleet_spec):
        fleet.add_server(capabilities, slots, online=i != offline)
    for event in history:
        if isinstance(event, Arrive):
            for _ in range(event.count):
                fleet.submit(event.owner, event.priority, event.capabilities)
        elif isinstance(event, Finish | Fail) and fleet.running():
            task_id = fleet.running()[event.pick % len(fleet.running())]
            if isinstance(event, Finish):
                fleet.finish(task_id)
            else:
                fleet.fail(task_id, event.backoff_ms)
        elif isinstance(event, Tick):
            fleet.clock[0] += event.ms
        fleet.wake(follows_the_model)
        now = fleet.clock[0]
        leftover = fleet.model.best(now)
        assert leftover is None, f"{leftover} could start on a free slot but did not"
        assert store_counts(fleet.store) == model_counts(fleet.model)
        for server in fleet.store.list_servers():
            assert 0 <= server.active_tasks <= server.max_concurrent
            assert server.active_tasks == fleet.model.servers[server.id].busy


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fleet_spec=servers,
    offline=st.sampled_from([-1, -1, -1, 0, 1]),
    history=st.lists(events, min_size=3, max_size=50),
    owner_limit=st.sampled_from([0, 0, 1, 2]),
)
def test_every_wake_up_starts_what_the_policy_says_and_leaves_no_free_slot_idle(
    fleet_spec: list[tuple[frozenset[str], int]], offline: int, history: list[object], owner_limit: int
) -> None:
    run(SqliteStore(":memory:"), fleet_spec, offline, history, owner_limit)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fleet_spec=servers,
    offline=st.sampled_from([-1, -1, -1, 0, 1]),
    history=st.lists(events, min_size=3, max_size=50),
    owner_limit=st.sampled_from([0, 0, 1, 2]),
)
def test_the_in_memory_store_schedules_the_same(
    fleet_spec: list[tuple[frozenset[str], int]], offline: int, history: list[object], owner_limit: int
) -> None:
    run(MemoryStore(), fleet_spec, offline, history, owner_limit)

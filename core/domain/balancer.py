"""Load balancing: which servers may take a task, and in which order to try them.

Pure functions over `Server` values: no I/O. The one piece of shared state, the round-robin
counter, is passed in as `sequence` so that every dispatcher draws from the same counter.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import operator
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import NamedTuple

from core.domain.fleet_index import CapableGroup, has_free_slot
from core.domain.models import Server, ServerStatus, Task

ALGORITHMS: tuple[str, ...] = (
    "round-robin",
    "least-connections",
    "weighted-round-robin",
    "random",
    "response-time",
    "p2c",
)
DEFAULT_ALGORITHM = "least-connections"
EWMA_ALPHA = 0.3  # weight of the newest observation


def candidates(servers: Iterable[Server], task: Task) -> list[Server]:
    """Servers that may take `task` now: online, a free slot, capabilities a superset of the task's."""
    online = ServerStatus.ONLINE
    fit = [s for s in servers if s.status == online and s.active_tasks < s.max_concurrent]
    if not task.capabilities:
        return fit
    if len(task.capabilities) == 1:  # the common case, and `in` on a short list beats building a set
        (needed,) = task.capabilities
        return [s for s in fit if needed in s.capabilities]
    wanted = frozenset(task.capabilities)
    return [s for s in fit if wanted.issubset(s.capabilities)]


def order(
    algorithm: str,
    candidates: Sequence[Server],
    *,
    sequence: Callable[[], int],
    rng: random.Random,
    avoid: Collection[str] = (),
) -> list[Server]:
    """Every candidate, in the order the dispatcher should try them.

    `sequence()` is called at most once, for round-robin and weighted-round-robin only, and not
    when there is nothing to choose (it is a shared counter: a write in the store). Servers in
    `avoid` (those that just failed the task) go last, in the same order.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown load-balancing algorithm: {algorithm!r}")
    if len(candidates) <= 1:
        return list(candidates)
    if algorithm == "round-robin":
        ring = sorted(candidates, key=_id)
        start = (sequence() - 1) % len(ring)
        ordered = ring[start:] + ring[:start]
    elif algorithm == "weighted-round-robin":
        ordered = _weighted(candidates, sequence())
    elif algorithm == "least-connections":
        ordered = _sort(candidates, _active, _load)
    elif algorithm == "random":
        ordered = list(candidates)
        rng.shuffle(ordered)
    elif algorithm == "response-time":
        ordered = _sort(candidates, _latency, _active)
    else:  # p2c
        i, j = rng.sample(range(len(candidates)), 2)
        first, second = sorted((candidates[i], candidates[j]), key=_lightness)
        rest = [s for s in _sort(candidates, _load, _active) if s is not first and s is not second]
        ordered = [first, second, *rest]
    if avoid:
        ordered = [s for s in ordered if s.id not in avoid] + [s for s in ordered if s.id in avoid]
    return ordered


# The first server to try, from an indexed group (core/domain/fleet_index.py): what `order(...)[0]`
# would be over the group's candidates, without looking at every server.
WEIGHTED_WALK = 64  # cycle slots tried past the counter's before giving up on the fast path


def first_choice(
    algorithm: str, group: CapableGroup, *, sequence: Callable[[], int], rng: random.Random
) -> Server | None:
    """The server `order` would put first among `group`'s candidates; None if there is none,
    or (weighted-round-robin, rarely) if the caller should compute the full `order` instead.

    The same as `order(...)[0]` for every algorithm when every capable server has a free slot.
    With full servers: round-robin, random and p2c draw over the candidates exactly as `order`
    does; least-connections and response-time are exact; weighted-round-robin keeps the cycle
    of all capable servers and gives a full server's turn to the next in the cycle (`order`
    makes a new cycle of the candidates), so the weights hold over time either way.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown load-balancing algorithm: {algorithm!r}")
    count = group.candidate_count
    if count == 0:
        return None
    if count == 1:
        return group.candidate(0)
    if algorithm == "round-robin":
        return group.candidate((sequence() - 1) % count)
    if algorithm == "least-connections":
        return group.least(_least_connections_key)
    if algorithm == "response-time":
        return group.least(_response_time_key)
    if algorithm == "random":
        return group.candidate(rng.randrange(count))
    if algorithm == "p2c":
        i, j = rng.randrange(count), rng.randrange(count - 1)  # two distinct, as rng.sample
        return min(group.candidate(i), group.candidate(j + (j >= i)), key=_lightness)
    plan = group.plan = group.plan or _weights_plan(group.servers)
    n = sequence()
    for step in range(min(WEIGHTED_WALK, plan.ends[-1])):
        server = group.servers[_pick(plan, (n - 1 + step) % plan.ends[-1])]
        if has_free_slot(server):
            return server
    return None


def _least_connections_key(server: Server) -> tuple[int, float, str]:
    return (server.active_tasks, _load(server), server.id)


def _response_time_key(server: Server) -> tuple[int, int, str]:
    return (_latency(server), server.active_tasks, server.id)


def next_ewma(previous: int | None, observed_ms: int) -> int:
    observed = max(0, observed_ms)  # a clock step backwards must not drag the average below 0
    if previous is None:
        return observed
    return round(EWMA_ALPHA * observed + (1 - EWMA_ALPHA) * previous)


def why_waiting(servers: Iterable[Server], task: Task) -> str:
    """Why `task` has no candidate, as a sentence for the queue-timeout error."""
    fleet = list(servers)
    needed = list(dict.fromkeys(task.capabilities))
    wanted = ", ".join(needed)
    offered = {c for s in fleet for c in s.capabilities}
    missing = [c for c in needed if c not in offered]
    if missing:
        return f"no registered server has capabilities: {', '.join(missing)}"
    if not fleet:
        return "no server is registered"
    capable = [s for s in fleet if set(needed).issubset(s.capabilities)]
    if not capable:
        # Every capability exists, but spread over servers that each lack one of them.
        return f"no registered server has all of the capabilities: {wanted}"
    online = [s for s in capable if s.status == ServerStatus.ONLINE]
    if not online:
        return f"no online server has capabilities: {wanted}" if needed else "no server is online"
    if any(s.free_slots for s in online):  # a stale fleet: the next dispatch will see the slot
        return "capable servers have free slots but none accepted the task"
    offline = len(capable) - len(online)
    also = f", and {offline} more {'is' if offline == 1 else 'are'} not online" if offline else ""
    if len(online) == 1:
        return f"the one online capable server is busy{also}"
    return f"all {len(online)} capable servers are busy{also}"


def _sort(servers: Iterable[Server], *keys: Callable[[Server], float]) -> list[Server]:
    """By keys[0], then keys[1], ..., then id.

    Stable sorts, least significant key first: about a third faster than one tuple key (tuples
    compare slowly), and the store lists servers by id, so the first sort is nearly free.
    """
    ranked = sorted(servers, key=_id)
    for key in reversed(keys):
        ranked.sort(key=key)
    return ranked


def _id(server: Server) -> str:
    return server.id


def _active(server: Server) -> int:
    return server.active_tasks


def _load(server: Server) -> float:
    return server.active_tasks / max(1, server.max_concurrent)


def _lightness(server: Server) -> tuple[float, int, str]:
    return (_load(server), server.active_tasks, server.id)


def _latency(server: Server) -> int:
    # Unmeasured first: otherwise a new server would never get the sample that ranks it.
    return -1 if server.latency_ewma_ms is None else server.latency_ewma_ms


# Weighted round-robin.
#
# The counter value n picks slot (n - 1) % W of a fixed cycle of W = sum(weights) slots, so any
# W consecutive values (from any mix of dispatchers) give each server exactly its weight. The
# cycle interleaves: a server of weight w sits at the midpoints (2k - 1) / 2w, k = 1..w, of
# [0, 1] (Sainte-Lague / Webster order), so 3:1 gives a a b a and 4:3:2 a b c a b a c b a, as
# nginx's smooth round-robin does; it differs from nginx only in how it orders ties. Servers of
# equal weight share their points, so the cycle is a list of blocks, one per (point, weight),
# each holding every server of that weight in id order, heavier first on a shared point. There
# are at most sum(distinct weights) blocks (5,050 for weights 1-100) however large W is, and a
# pick is a bisect over the block ends: nothing is O(W), nothing is recomputed for a known fleet.


class _Plan(NamedTuple):
    ring: tuple[int, ...]  # candidate indices, heaviest first, then by id: the order after the pick
    rank: dict[int, int]  # candidate index -> its position in `ring`
    groups: dict[int, list[int]]  # weight -> candidate indices of that weight, by id
    blocks: tuple[int, ...]  # the weight of each block, in cycle order
    ends: list[int]  # slots up to the end of each block; ends[-1] == W


def _weighted(candidates: Sequence[Server], n: int) -> list[Server]:
    # Keyed by the fleet as given: the store lists servers in a stable order, so it repeats.
    plan = _weights_plan(candidates)
    pick = _pick(plan, (n - 1) % plan.ends[-1])
    ordered = [candidates[i] for i in plan.ring]
    ordered.insert(0, ordered.pop(plan.rank[pick]))
    return ordered


def _weights_plan(servers: Sequence[Server]) -> _Plan:
    return _plan(tuple([(s.id, s.priority if s.priority > 0 else 1) for s in servers]))


def _pick(plan: _Plan, slot: int) -> int:
    """The index (into the servers the plan was made for) that owns `slot` of the cycle."""
    block = bisect.bisect_right(plan.ends, slot)
    return plan.groups[plan.blocks[block]][slot - (plan.ends[block - 1] if block else 0)]


@functools.lru_cache(maxsize=64)
def _plan(fleet: tuple[tuple[str, int], ...]) -> _Plan:
    groups: dict[int, list[int]] = {}
    for i in sorted(range(len(fleet)), key=lambda i: fleet[i][0]):
        groups.setdefault(fleet[i][1], []).append(i)
    weights = tuple(sorted(groups, reverse=True))
    ring = tuple(i for w in weights for i in groups[w])
    blocks = _blocks(weights)
    ends = list(itertools.accumulate(len(groups[w]) for w in blocks))
    return _Plan(ring, {i: position for position, i in enumerate(ring)}, groups, blocks, ends)


@functools.lru_cache(maxsize=256)
def _blocks(weights: tuple[int, ...]) -> tuple[int, ...]:
    """The block weights in cycle order, for `weights` in descending order."""
    # Floats are exact enough: division is correctly rounded, so equal points stay equal, and
    # distinct ones differ by at least 1 / (4 * w * w') (2.5e-5 for weights up to 100).
    points = [((2 * k - 1) / (2 * w), w) for w in weights for k in range(1, w + 1)]
    points.sort(key=operator.itemgetter(0))  # stable: heavier first on a shared point
    return tuple(w for _, w in points)

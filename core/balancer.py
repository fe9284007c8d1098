"""Load balancing: which servers may take a task, and in which order to try them.

Pure functions over `Server` values: no I/O. The one piece of shared state, the round-robin
counter, is passed in as `sequence` so that every dispatcher draws from the same counter.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from core.models import Server, ServerStatus, Task

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
    needed = frozenset(task.capabilities)
    return [s for s in fit if needed.issubset(s.capabilities)]


def order(
    algorithm: str,
    candidates: Sequence[Server],
    *,
    sequence: Callable[[], int],
    rng: random.Random,
    avoid: str | None = None,
) -> list[Server]:
    """Every candidate, in the order the dispatcher should try them.

    `sequence()` is called at most once, for round-robin and weighted-round-robin only, and not
    when there is nothing to choose (it is a shared counter: a write in the store).
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
        ordered = sorted(candidates, key=lambda s: (s.active_tasks, _load(s), s.id))
    elif algorithm == "random":
        ordered = list(candidates)
        rng.shuffle(ordered)
    elif algorithm == "response-time":
        # Unmeasured servers first: otherwise they would never get the sample that ranks them.
        ordered = sorted(
            candidates,
            key=lambda s: (s.latency_ewma_ms is not None, s.latency_ewma_ms or 0, s.active_tasks, s.id),
        )
    else:  # p2c
        first, second = (candidates[i] for i in rng.sample(range(len(candidates)), 2))
        if _p2c_key(second) < _p2c_key(first):
            first, second = second, first
        rest = sorted((s for s in candidates if s is not first and s is not second), key=_p2c_key)
        ordered = [first, second, *rest]
    if avoid is not None:
        ordered = [s for s in ordered if s.id != avoid] + [s for s in ordered if s.id == avoid]
    return ordered


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
    if not fleet:
        return "no server is registered"
    offered = {c for s in fleet for c in s.capabilities}
    missing = [c for c in needed if c not in offered]
    if missing:
        return f"no registered server has capabilities: {', '.join(missing)}"
    capable = [s for s in fleet if set(needed).issubset(s.capabilities)]
    if not capable:
        # Every capability exists, but spread over servers that each lack one of them.
        return f"no registered server has all of the capabilities: {wanted}"
    online = [s for s in capable if s.status == ServerStatus.ONLINE]
    if not online:
        return f"no online server has capabilities: {wanted}" if needed else "no server is online"
    if any(s.free_slots for s in online):
        return f"{len(online)} capable servers have free slots but none accepted the task"
    if len(online) == 1:
        return "the only capable server is busy"
    return f"all {len(online)} capable servers are busy"


def _id(server: Server) -> str:
    return server.id


def _load(server: Server) -> float:
    return server.active_tasks / max(1, server.max_concurrent)


def _p2c_key(server: Server) -> tuple[float, int, str]:
    return (_load(server), server.active_tasks, server.id)


# Weighted round-robin.
#
# The counter value n picks position (n - 1) % W of a fixed cycle of W = sum(weights) slots, so
# any W consecutive values (from any mix of dispatchers) give each server exactly its weight.
# The cycle interleaves: a server of weight w sits at the midpoints (2k - 1) / 2w, k = 1..w, of
# [0, 1] (Sainte-Lague / Webster order), so 3:1 gives a a b a, as nginx's smooth round-robin
# does. Servers of equal weight share their points, so the cycle is a list of blocks, one per
# (point, weight), each holding every server of that weight in id order. There are at most
# sum(distinct weights) blocks (5,050 for weights 1-100) however large W is, and a pick is a
# bisect over the block ends: nothing is O(W), and nothing is recomputed for a known fleet.


class _Plan(NamedTuple):
    ring: list[int]  # candidate indices, heaviest first, then by id: the order after the pick
    groups: dict[int, list[int]]  # weight -> candidate indices of that weight, by id
    blocks: tuple[int, ...]  # the weight of each block, in cycle order
    ends: list[int]  # cumulative slot count at the end of each block; ends[-1] == W


def _weight(server: Server) -> int:
    return max(1, server.priority)


def _weighted(candidates: Sequence[Server], n: int) -> list[Server]:
    # Keyed by the fleet as given: the store lists servers in a stable order, so it repeats.
    plan = _plan(tuple((s.id, _weight(s)) for s in candidates))
    slot = (n - 1) % plan.ends[-1]
    block = bisect.bisect_right(plan.ends, slot)
    offset = slot - (plan.ends[block - 1] if block else 0)
    pick = plan.groups[plan.blocks[block]][offset]
    return [candidates[pick]] + [candidates[i] for i in plan.ring if i != pick]


@functools.lru_cache(maxsize=64)
def _plan(fleet: tuple[tuple[str, int], ...]) -> _Plan:
    ring = sorted(range(len(fleet)), key=lambda i: (-fleet[i][1], fleet[i][0]))
    groups: dict[int, list[int]] = {}
    for i in ring:
        groups.setdefault(fleet[i][1], []).append(i)
    blocks = _blocks(tuple(groups))
    return _Plan(ring, groups, blocks, list(itertools.accumulate(len(groups[w]) for w in blocks)))


@functools.lru_cache(maxsize=256)
def _blocks(weights: tuple[int, ...]) -> tuple[int, ...]:
    # Points compared exactly as integers: (2k - 1) / 2w scaled by 2 * lcm(weights).
    scale = math.lcm(*weights)
    points = sorted(((2 * k - 1) * (scale // w), -w) for w in weights for k in range(1, w + 1))
    return tuple(-negated for _, negated in points)

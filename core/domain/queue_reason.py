"""Why a PENDING task waits: the `queue` object of GET /api/task/:id and the rows of
GET /api/stats/queue, from the fleet as dispatch sees it. Pure: no I/O.

The reasons, checked in this order (the first that holds is the one given):
- `no_capable_server`: no registered server has every capability the task needs;
- `no_server_online`: capable servers exist, but none is online and in selection (offline,
  degraded, in maintenance, or ejected by outlier detection);
- `backoff`: the task waits out the backoff after an attempt that did not finish (failed or busy);
- `capacity_full`: capable servers are online, every slot that selection may fill is taken;
- `dispatching`: a capable server has a free slot: the task is about to start.

Details name capabilities, servers and their state, never an endpoint URL.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.domain.models import Server, ServerStatus, Task
from core.domain.outlier import is_ejected

# Servers named in one sentence; the rest are counted.
NAMED_SERVERS = 5


class Reason(enum.StrEnum):
    NO_CAPABLE_SERVER = "no_capable_server"
    NO_SERVER_ONLINE = "no_server_online"
    BACKOFF = "backoff"
    CAPACITY_FULL = "capacity_full"
    DISPATCHING = "dispatching"


@dataclass(frozen=True)
class Explanation:
    reason: Reason
    details: str
    # The online capable servers in selection, and the slots selection may fill on them.
    capable_online: int = 0
    slots: int = 0


def explain(
    capabilities: Sequence[str],
    servers: Iterable[Server],
    now: int,
    *,
    slot_limit: Callable[[Server], int],
    not_before: int = 0,
    previous_server: str | None = None,
) -> Explanation:
    """Why a task needing `capabilities` waits. `slot_limit(server)` is how many of the
    server's slots selection may fill now (0 while ejected, fewer during a slow start)."""
    fleet = list(servers)
    needed = list(dict.fromkeys(capabilities))
    capable = [s for s in fleet if set(needed).issubset(s.capabilities)]
    if not capable:
        return Explanation(Reason.NO_CAPABLE_SERVER, _nobody_capable(fleet, needed))
    usable = [s for s in capable if s.status is ServerStatus.ONLINE and not is_ejected(s, now)]
    if not usable:
        states = ", ".join(_state(s, now) for s in capable[:NAMED_SERVERS])
        return Explanation(
            Reason.NO_SERVER_ONLINE,
            f"{_servers_for(needed, len(capable))} {'is' if len(capable) == 1 else 'are'} not taking"
            f" tasks: {states}{_more(len(capable))}",
        )
    limits = {s.id: slot_limit(s) for s in usable}
    slots = sum(limits.values())
    taken = sum(min(s.active_tasks, limits[s.id]) for s in usable)
    if not_before > now:
        last = (
            f"the last one, on server {previous_server}, did not finish" if previous_server else "backing off"
        )
        return Explanation(
            Reason.BACKOFF,
            f"waiting {not_before - now} ms before the next attempt ({last})",
            len(usable),
            slots,
        )
    free = [s for s in usable if s.active_tasks < limits[s.id]]
    if free:
        names = ", ".join(s.id for s in free[:NAMED_SERVERS])
        return Explanation(
            Reason.DISPATCHING,
            f"a slot is free on {names}{_more(len(free))}: the task is about to start",
            len(usable),
            slots,
        )
    also = len(capable) - len(usable)
    rest = (
        f"; {also} more capable {'server is' if also == 1 else 'servers are'} not taking tasks"
        if also
        else ""
    )
    return Explanation(
        Reason.CAPACITY_FULL,
        f"every slot is taken on the {_servers_for(needed, len(usable), online=True)}"
        f" ({taken} of {slots} slots){rest}",
        len(usable),
        slots,
    )


def explain_task(
    task: Task, servers: Iterable[Server], now: int, *, slot_limit: Callable[[Server], int]
) -> Explanation:
    return explain(
        task.capabilities,
        servers,
        now,
        slot_limit=slot_limit,
        not_before=task.not_before,
        previous_server=task.previous_server_id,
    )


def _nobody_capable(fleet: list[Server], needed: list[str]) -> str:
    if not fleet:
        return (
            f"no server is registered (the task needs {_listed(needed)})"
            if needed
            else "no server is registered"
        )
    offered = {c for s in fleet for c in s.capabilities}
    missing = [c for c in needed if c not in offered]
    if missing:
        return f"no registered server has {_listed(missing)}"
    # Every capability exists, but spread over servers that each lack one of them.
    return f"no registered server has all of {_listed(needed)}"


def _servers_for(needed: list[str], count: int, *, online: bool = False) -> str:
    kind = "online server" if online else "server"
    which = f" with {_listed(needed)}" if needed else ""
    if count == 1:
        return f"one {kind}{which}"
    return f"{count} {kind}s{which}"


def _state(server: Server, now: int) -> str:
    if server.status is ServerStatus.ONLINE and is_ejected(server, now):
        assert server.ejected_until is not None
        return f"{server.id} ejected after failed attempts for {server.ejected_until - now} ms more"
    if server.status is ServerStatus.MAINTENANCE and server.maintenance_reason:
        return f"{server.id} in maintenance ({server.maintenance_reason})"
    if server.status is ServerStatus.MAINTENANCE:
        return f"{server.id} in maintenance"
    return f"{server.id} {server.status.value}"


def _listed(capabilities: Iterable[str]) -> str:
    return ", ".join(f"`{c}`" for c in capabilities)


def _more(count: int) -> str:
    extra = count - NAMED_SERVERS
    return f" and {extra} more" if extra > 0 else ""


def backlog_rows(
    groups: Iterable[tuple[Sequence[str], int]],
    servers: Iterable[Server],
    now: int,
    *,
    slot_limit: Callable[[Server], int],
) -> list[dict[str, object]]:
    """The backlog by capability set (`groups`: capabilities, PENDING count), each with why its
    tasks wait, largest first. A task's own backoff is not seen here: the reason is the fleet's."""
    fleet = list(servers)
    ordered = sorted(((list(c), n) for c, n in groups if n > 0), key=lambda group: (-group[1], group[0]))
    rows: list[dict[str, object]] = []
    for capabilities, count in ordered:
        why = explain(capabilities, fleet, now, slot_limit=slot_limit)
        tasks_need = "1 task needs" if count == 1 else f"{count} tasks need"
        needs = _listed(capabilities) if capabilities else "no capability"
        rows.append(
            {
                "capabilities": capabilities,
                "count": count,
                "reason": why.reason.value,
                "details": f"{tasks_need} {needs}: {why.details}",
            }
        )
    return rows


class QueueSize(Protocol):
    """How many PENDING tasks one owner has of one capability set and priority (the scheduler's
    owner queue)."""

    @property
    def capabilities(self) -> frozenset[str]: ...
    @property
    def priority(self) -> int: ...
    @property
    def owner(self) -> str: ...
    @property
    def pending(self) -> int: ...


@dataclass(frozen=True)
class QueueCount:
    capabilities: frozenset[str]
    priority: int
    owner: str
    pending: int


def position(
    task: Task,
    ahead_in_own_queue: int,
    queues: Iterable[QueueSize],
    servers: Sequence[Server],
) -> int:
    """The task's 1-based place among the PENDING tasks that compete for its servers, under the
    scheduling policy: every task of a higher priority goes first; at its priority, the tasks of
    its own owner queue ahead of it (FIFO), and, as fair share interleaves owners, up to as many
    again plus one from every other owner (an estimate: the exact interleaving depends on the
    owners' tasks in flight when each slot frees). A queue competes when one of `servers` (the
    task's capable servers) could run it."""
    wanted = set(task.capabilities)
    capable = [s for s in servers if wanted.issubset(s.capabilities)]
    ahead = ahead_in_own_queue
    others: dict[str, int] = {}
    own_set = frozenset(task.capabilities)
    for queue in queues:
        if not any(queue.capabilities.issubset(s.capabilities) for s in capable):
            continue
        if queue.priority > task.priority:
            ahead += queue.pending
        elif queue.priority == task.priority and not (
            queue.owner == task.owner and queue.capabilities == own_set
        ):
            others[queue.owner] = others.get(queue.owner, 0) + queue.pending
    ahead += sum(min(pending, ahead_in_own_queue + 1) for pending in others.values())
    return ahead + 1


def start_estimate(
    why: Explanation,
    place: int,
    task: Task,
    servers: Iterable[Server],
    now: int,
    *,
    slot_limit: Callable[[Server], int],
) -> int | None:
    """`estimatedStartAt` for a task that waits for `why`, at `place`: now when about to start;
    at the pace of its online capable servers when their slots are full; not before its backoff
    ends; unknown when no server can take it now."""
    if why.reason is Reason.DISPATCHING:
        return now
    if why.reason not in (Reason.CAPACITY_FULL, Reason.BACKOFF):
        return None
    wanted = set(task.capabilities)
    usable = [
        s
        for s in servers
        if s.status is ServerStatus.ONLINE and not is_ejected(s, now) and wanted.issubset(s.capabilities)
    ]
    if why.reason is Reason.BACKOFF and any(s.active_tasks < slot_limit(s) for s in usable):
        return task.not_before
    paced = estimated_start(place, usable, now, slot_limit=slot_limit)
    if paced is None or why.reason is Reason.CAPACITY_FULL:
        return paced
    return max(task.not_before, paced)


def estimated_start(
    place: int, servers: Iterable[Server], now: int, *, slot_limit: Callable[[Server], int]
) -> int | None:
    """When the task at `place` may start if the servers keep their recent pace: their slots
    free at sum(slots / processing time) per ms, and it starts at the place-th release. None
    when none of them has a recent processing time (or a slot to offer)."""
    slots = 0
    measured_slots = 0
    weighted_ms = 0
    for server in servers:
        limit = slot_limit(server)
        slots += limit
        if server.latency_ewma_ms is not None and limit > 0:
            measured_slots += limit
            weighted_ms += limit * max(1, server.latency_ewma_ms)
    if not measured_slots or not slots:
        return None
    mean_ms = weighted_ms / measured_slots
    return now + round(place * mean_ms / slots)

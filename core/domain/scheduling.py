"""The scheduling policy: which PENDING task the next free slot goes to. Pure, no I/O.

PENDING tasks are kept in *owner queues*: one FIFO per (capability set, priority, owner), in the
order the tasks became ready to run (`ready_at`: when queued or, after a failed attempt, when
its backoff ends). Each dispatch takes, among the owner queues that some online server with a
free slot can run:

1. the highest priority, always;
2. within it, the owner with the fewest tasks in flight on the whole fleet (owners at
   MAX_IN_FLIGHT_PER_OWNER are passed over);
3. then the task that has waited longest (ready_at, then id): FIFO within one owner.

A queue that no free server can run is never looked at, so it cannot hold up one that can; the
balancer then picks which of the capable free servers takes the chosen task. The store keeps the
owner queues as an index (their sizes, and each one's FIFO), so a choice reads the heads of the
owner queues, never the backlog behind them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from core.domain.models import Task

# A capability label never holds one (schemas.LABEL), so the key is unambiguous.
QUEUE_SEPARATOR = ","


def queue_key(capabilities: Iterable[str]) -> str:
    """The canonical name of a capability set: its labels sorted, comma-joined ("" for none)."""
    return QUEUE_SEPARATOR.join(sorted(set(capabilities)))


def queue_capabilities(key: str) -> frozenset[str]:
    return frozenset(key.split(QUEUE_SEPARATOR)) if key else frozenset()


def ready_at(task: Task) -> int:
    """When the task may start: queued, or its retry backoff ended, whichever is later."""
    return max(task.queued_at, task.not_before)


def fifo_position(task: Task) -> tuple[int, str]:
    """A task's place in its owner queue."""
    return (ready_at(task), task.id)


def may_start_more(in_flight: int, owner_limit: int) -> bool:
    """MAX_IN_FLIGHT_PER_OWNER: 0 means no limit."""
    return owner_limit <= 0 or in_flight < owner_limit


@dataclass(frozen=True)
class OwnerQueue:
    """One owner's PENDING tasks of one capability set and priority: how many there are."""

    queue: str
    priority: int
    owner: str
    pending: int
    # The FIFO position of its first task, when the store keeps it (SQLite, memory): a choice
    # then reads only the chosen queue's tasks. None: read the head to know it.
    head: tuple[int, str] | None = None

    @property
    def capabilities(self) -> frozenset[str]:
        return queue_capabilities(self.queue)


# Reads the next tasks of an owner queue in FIFO order, after the given position (exclusive).
ReadQueue = Callable[[OwnerQueue, tuple[int, str] | None], list[Task]]


@dataclass
class _Cursor:
    """An owner queue's tasks read so far, not yet taken."""

    owner_queue: OwnerQueue
    buffered: list[Task] = field(default_factory=list)
    after: tuple[int, str] | None = None
    exhausted: bool = False
    # The head's position as the store's index gave it, until the head is read or taken.
    known_head: tuple[int, str] | None = None


class Picker:
    """The choices of one dispatch round (a wake-up): built from the owner queues and the
    owners' in-flight counts as the store has them, then told what started and what was
    skipped, so one round reads each owner queue's head once (a few tasks at a time).

    `next(runnable, now)` costs O(owner queues) plus the reads of heads not yet buffered: it
    grows with the number of (capability set, priority, owner) combinations, not the backlog.
    """

    def __init__(
        self,
        queues: Iterable[OwnerQueue],
        in_flight: Mapping[str, int],
        read: ReadQueue,
        *,
        owner_limit: int = 0,
    ) -> None:
        self.in_flight = dict(in_flight)
        self.owner_limit = owner_limit
        self._read = read
        by_priority: dict[int, list[_Cursor]] = {}
        for owner_queue in queues:
            if owner_queue.pending > 0:
                cursor = _Cursor(owner_queue, known_head=owner_queue.head)
                by_priority.setdefault(owner_queue.priority, []).append(cursor)
        self._levels = sorted(by_priority.items(), key=lambda level: -level[0])
        # The earliest time a head that is not ready yet becomes ready (None: no such head).
        self.wake_at: int | None = None

    def next(self, runnable: Callable[[str], bool], now: int) -> Task | None:
        """The best task to start now among the owner queues `runnable` accepts (by queue key:
        some server with a free slot has all of its capabilities), or None."""
        self.wake_at = None
        for _, cursors in self._levels:
            best: tuple[int, int, str] | None = None
            chosen: _Cursor | None = None
            for cursor in cursors:
                owner = cursor.owner_queue.owner
                in_flight = self.in_flight.get(owner, 0)
                if not may_start_more(in_flight, self.owner_limit):
                    continue
                if not runnable(cursor.owner_queue.queue):
                    continue
                position = self._head_position(cursor)
                if position is None:
                    continue
                ready, task_id = position
                if ready > now:
                    self.wake_at = ready if self.wake_at is None else min(self.wake_at, ready)
                    continue
                rank = (in_flight, ready, task_id)
                if best is None or rank < best:
                    best, chosen = rank, cursor
            if chosen is not None:
                head = self._head(chosen)
                if head is not None:
                    return head
                return self.next(runnable, now)  # the queue emptied meanwhile: choose again
        return None

    def started(self, task: Task) -> None:
        """`task` took a slot: its owner has one more in flight."""
        self._drop(task)
        self.in_flight[task.owner] = self.in_flight.get(task.owner, 0) + 1

    def skipped(self, task: Task) -> None:
        """`task` is gone from the queue (another dispatcher took it, or it was cancelled)."""
        self._drop(task)

    def owner_full(self, owner: str) -> None:
        """The store refused a claim at the owner's limit: pass the owner over from now on."""
        self.in_flight[owner] = max(self.in_flight.get(owner, 0), self.owner_limit)

    def _drop(self, task: Task) -> None:
        for _, cursors in self._levels:
            for cursor in cursors:
                if cursor.buffered and cursor.buffered[0].id == task.id:
                    cursor.buffered.pop(0)
                    return

    def _head_position(self, cursor: _Cursor) -> tuple[int, str] | None:
        if cursor.known_head is not None and not cursor.buffered:
            return cursor.known_head
        head = self._head(cursor)
        return None if head is None else fifo_position(head)

    def _head(self, cursor: _Cursor) -> Task | None:
        cursor.known_head = None
        if not cursor.buffered and not cursor.exhausted:
            more = self._read(cursor.owner_queue, cursor.after)
            if not more:
                cursor.exhausted = True
            else:
                cursor.buffered = more
                cursor.after = fifo_position(more[-1])
        return cursor.buffered[0] if cursor.buffered else None

"""The scheduling index in memory: owner queues are scans of the PENDING tasks (sorted as the
other adapters' indexes sort), the owners' tasks in flight a count changed with each claim and
release (core/local/memory/tasks.py)."""

from __future__ import annotations

from core.domain.models import Task, TaskStatus
from core.domain.scheduling import OwnerQueue, fifo_position, queue_key
from core.local.memory._data import MemoryBase, copy
from core.ports.storage import SchedulingStore, TaskStore


class MemorySchedulingStore(MemoryBase, TaskStore, SchedulingStore):
    def owner_queues(self) -> list[OwnerQueue]:
        counts: dict[tuple[str, int, str], int] = {}
        heads: dict[tuple[str, int, str], tuple[int, str]] = {}
        with self._lock:
            for task in self.data.tasks.values():
                if task.status is TaskStatus.PENDING:
                    key = (queue_key(task.capabilities), task.priority, task.owner)
                    counts[key] = counts.get(key, 0) + 1
                    heads[key] = min(heads.get(key, fifo_position(task)), fifo_position(task))
        return [
            OwnerQueue(queue, priority, owner, n, heads[(queue, priority, owner)])
            for (queue, priority, owner), n in sorted(counts.items())
        ]

    def queue_tasks(
        self, owner_queue: OwnerQueue, limit: int, *, after: tuple[int, str] | None = None
    ) -> list[Task]:
        with self._lock:
            found = sorted(
                (
                    t
                    for t in self.data.tasks.values()
                    if _in(t, owner_queue) and (after is None or fifo_position(t) > after)
                ),
                key=fifo_position,
            )
            return [copy(t) for t in found[: max(limit, 0)]]

    def queue_ahead(self, task: Task) -> int:
        owner_queue = OwnerQueue(queue_key(task.capabilities), task.priority, task.owner, 0)
        with self._lock:
            return sum(
                1
                for t in self.data.tasks.values()
                if _in(t, owner_queue) and fifo_position(t) < fifo_position(task)
            )

    def in_flight_by_owner(self) -> dict[str, int]:
        with self._lock:
            return {owner: n for owner, n in self.data.in_flight.items() if n != 0}

    def set_in_flight(self, owner: str, value: int, *, expected: int, quiet_since: int) -> bool:
        with self._lock:
            if self.data.in_flight.get(owner, 0) != expected:
                return False
            self.data.in_flight[owner] = value
            return True

    def pending_queued_before(self, cutoff: int, limit: int) -> list[Task]:
        with self._lock:
            found = sorted(
                (
                    t
                    for t in self.data.tasks.values()
                    if t.status is TaskStatus.PENDING and t.queued_at <= cutoff
                ),
                key=lambda t: (t.queued_at, t.id),
            )
            return [copy(t) for t in found[: max(limit, 0)]]

    def pending_by_priority(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for owner_queue in self.owner_queues():
            counts[owner_queue.priority] = counts.get(owner_queue.priority, 0) + owner_queue.pending
        return counts

    def count_pending(self) -> int:
        return sum(owner_queue.pending for owner_queue in self.owner_queues())


def _in(task: Task, owner_queue: OwnerQueue) -> bool:
    return (
        task.status is TaskStatus.PENDING
        and task.owner == owner_queue.owner
        and task.priority == owner_queue.priority
        and queue_key(task.capabilities) == owner_queue.queue
    )

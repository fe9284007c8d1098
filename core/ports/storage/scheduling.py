"""The scheduler's index of PENDING tasks and the owners' tasks in flight (core/domain/scheduling.py,
docs/SCHEDULING.md): what dispatch reads to choose, and the sweeper to repair."""

from __future__ import annotations

from abc import ABC, abstractmethod

from core.domain.models import Task
from core.domain.scheduling import OwnerQueue

__all__ = ["SchedulingStore"]


class SchedulingStore(ABC):
    """Kept by the same atomic writes as the tasks (TaskStore): a task entering or leaving
    PENDING changes its owner queue's count, one entering or leaving PROCESSING its owner's
    tasks in flight, and `TaskStore.claim_task` checks MAX_IN_FLIGHT_PER_OWNER in its write."""

    @abstractmethod
    def owner_queues(self) -> list[OwnerQueue]:
        """Every (capability set, priority, owner) that has PENDING tasks, with how many.
        Exact: kept in the same atomic writes that move tasks into and out of PENDING. Its size
        grows with queues x priorities x owners, never with the backlog."""

    @abstractmethod
    def queue_tasks(
        self, owner_queue: OwnerQueue, limit: int, *, after: tuple[int, str] | None = None
    ) -> list[Task]:
        """That owner queue's PENDING tasks in FIFO order (`scheduling.fifo_position`: ready_at,
        then id), strictly after the position `after`; up to `limit`. One index read."""

    @abstractmethod
    def queue_ahead(self, task: Task) -> int:
        """How many PENDING tasks of the task's owner queue come before it (0: it is the head)."""

    @abstractmethod
    def in_flight_by_owner(self) -> dict[str, int]:
        """Tasks PROCESSING per owner (owners with none may be missing). Exact: kept in the same
        atomic writes that move tasks into and out of PROCESSING."""

    @abstractmethod
    def set_in_flight(self, owner: str, value: int, *, expected: int, quiet_since: int) -> bool:
        """Reconciliation only: set the owner's count if it is still `expected` and no claim or
        release changed it after `quiet_since` (an index read before may not show that task)."""

    @abstractmethod
    def pending_queued_before(self, cutoff: int, limit: int) -> list[Task]:
        """PENDING tasks whose `queued_at` is at or before `cutoff`, oldest first (queue
        timeouts: only what is due is read)."""

"""Tasks: create, read, compare-and-set transitions, claim and release, and the index reads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from core.domain.models import Task, TaskStatus, WebhookDelivery

__all__ = ["CLOCK_SKEW_MS", "TaskPage", "TaskStore", "capability_set", "position", "update_sources"]

# Writers' clocks may differ this much (Lambdas on different hosts): a release frees a slot of
# the server registered under the task's server id unless that registration is clearly newer
# than the task's start (a server unregistered and registered afresh meanwhile).
CLOCK_SKEW_MS = 2_000


def update_sources(from_status: Collection[TaskStatus], changes: Mapping[str, Any]) -> frozenset[TaskStatus]:
    """The states update_task may really write from: it never moves a task into or out of
    PROCESSING (that takes or frees a slot: claim_task and release_task do it)."""
    sources = frozenset(TaskStatus(s) for s in from_status)
    target = changes.get("status")
    if target is None:
        return sources
    if TaskStatus(target) is TaskStatus.PROCESSING:
        return sources & {TaskStatus.PROCESSING}
    return sources - {TaskStatus.PROCESSING}


def position(task: Task) -> str:
    """Where a task stands in the newest-first listing: `<createdAt:13>#<id>`. Plain strings
    of this form sort as the listing does (every adapter compares them byte by byte)."""
    return f"{task.created_at:013d}#{task.id}"


def capability_set(capabilities: Collection[str]) -> tuple[str, ...]:
    """A task's capabilities as a key: sorted, without repeats (the order never matters)."""
    return tuple(sorted(set(capabilities)))


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Task]
    # The position to pass as `before` for the next page; None when there is no more.
    after: str | None


class TaskStore(ABC):
    """What the task, dispatch and sweeper services need of tasks."""

    @abstractmethod
    def put_task(self, task: Task) -> None:
        """Store a new task. StaleWriteError if the id is taken."""

    @abstractmethod
    def get_task(self, task_id: str) -> Task | None: ...

    @abstractmethod
    def update_task(
        self,
        task_id: str,
        changes: Mapping[str, Any],
        *,
        from_status: Collection[TaskStatus],
        attempts: int | None = None,
        server_id: str | None = None,
        retries: int | None = None,
        delivery: WebhookDelivery | None = None,
    ) -> Task:
        """Apply `changes` (Task field -> value) if the task is in one of `from_status` (and
        has that attempt count, server and retry count, when given). Returns the task as
        written. `delivery` (a task finishing with a webhook) is stored in the same atomic
        write.

        Never moves a task into or out of PROCESSING (see claim_task and release_task): a
        task found PROCESSING when `changes` set another status, or not PROCESSING when they
        set PROCESSING, fails the condition like any other state (see update_sources).
        StaleWriteError(current) if the condition fails; current is None if no such task.
        """

    @abstractmethod
    def claim_task(self, task: Task, changes: Mapping[str, Any], *, owner_limit: int = 0) -> Task:
        """PENDING -> PROCESSING on `changes["server_id"]`, taking one of that server's slots
        and adding one to the owner's tasks in flight, atomically. The write is conditional on
        the task still being PENDING with `task.attempts`; returns `task` with `changes` applied.

        The same write sets the server's `last_claim_at` to `changes["updated_at"]`.
        NoCapacityError if the server is gone, not online or full (the task is unchanged);
        OwnerLimitError if `owner_limit` > 0 and the owner has that many in flight already;
        StaleWriteError(current) if the task moved on (no slot is taken).
        `changes` must set status PROCESSING and server_id.
        """

    @abstractmethod
    def release_task(
        self,
        task: Task,
        changes: Mapping[str, Any],
        *,
        server_counters: Mapping[str, int] | None = None,
        server_values: Mapping[str, Any] | None = None,
        delivery: WebhookDelivery | None = None,
    ) -> Task:
        """Move `task` out of PROCESSING and free its slot on `task.server_id`, atomically
        (with `delivery`, when given, stored in the same write).

        Conditional on the task still being PROCESSING on that server with `task.attempts`;
        `server_counters` (Server field -> increment) are added and `server_values` (Server
        field -> value) set in the same write (both skipped, with the slot, if the server was
        unregistered). Returns `task` with `changes`
        applied. StaleWriteError(current) if the task moved on (nothing is written).
        """

    @abstractmethod
    def tasks_by_owner(self, owner: str, limit: int = 50) -> list[Task]:
        """Newest first, as summaries (see `list_tasks`)."""

    @abstractmethod
    def list_tasks(
        self,
        limit: int,
        *,
        status: TaskStatus | None = None,
        owner: str | None = None,
        before: str | None = None,
    ) -> TaskPage:
        """Tasks newest first (createdAt, then id, descending), optionally of one status and
        one owner, strictly after the position `before` (see `position`). Up to `limit`
        tasks; a page may hold fewer while `after` is set (an adapter bounds what one call
        reads), and `after` is None only when nothing is left.

        The tasks are summaries: every field as stored but `payload`, `result` and `error`,
        which an adapter may leave out (DynamoDB's listing indexes do not carry them: writing
        a task would cost each index its payload's size). Read a task whole with `get_task`."""

    @abstractmethod
    def pending_by_priority(self) -> dict[int, int]:
        """How many tasks are PENDING at each priority (only priorities with some)."""

    @abstractmethod
    def pending_by_need(self) -> dict[tuple[int, tuple[str, ...]], int]:
        """How many tasks are PENDING at each (priority, capability set), the set sorted and
        without repeats; only the pairs with some. From the owner queues' counts
        (SchedulingStore.owner_queues) where a store keeps them: its cost follows the owner
        queues, not the backlog."""

    @abstractmethod
    def count_pending(self) -> int:
        """How many tasks are PENDING (the backlog), from the PENDING index."""

    @abstractmethod
    def processing_due(self, before: int, limit: int) -> list[Task]:
        """PROCESSING tasks whose deadline is at or before `before`, earliest first."""

    @abstractmethod
    def processing_on_server(self, server_id: str, limit: int = 1000) -> list[Task]: ...

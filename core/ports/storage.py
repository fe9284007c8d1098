"""The storage interface the services need, and nothing more.

Two adapters implement it and pass one contract suite (`tests/contract`):
`core.local.sqlite.SqliteStore` (one machine) and `core.aws.dynamodb.DynamoStore` (AWS).

Rules every adapter keeps:
- Every task transition is a compare-and-set on the task's status (and, where given, its
  attempt number and server); a caller that loses gets StaleWriteError, never a silent win.
- A task enters or leaves PROCESSING in the same atomic write that takes or frees its slot
  on the server, so `Server.active_tasks` always equals the tasks PROCESSING there.
- No request-path method reads the whole table; every list comes from an index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

from core.domain.models import OutputChunk, Server, Task, TaskStatus, WebhookDelivery

__all__ = ["CLOCK_SKEW_MS", "IdempotencyRecord", "Store", "TaskPage", "position", "update_sources"]

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
    of this form sort as the listing does (both adapters compare them byte by byte)."""
    return f"{task.created_at:013d}#{task.id}"


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Task]
    # The position to pass as `before` for the next page; None when there is no more.
    after: str | None


@dataclass(frozen=True)
class IdempotencyRecord:
    key: str
    body_hash: str
    task_id: str
    expires_at: int  # epoch seconds


class Store(ABC):
    # -- tasks ---------------------------------------------------------------------------

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
    def claim_task(self, task: Task, changes: Mapping[str, Any]) -> Task:
        """PENDING -> PROCESSING on `changes["server_id"]`, taking one of that server's slots,
        atomically. The write is conditional on the task still being PENDING with
        `task.attempts`; returns `task` with `changes` applied.

        The same write sets the server's `last_claim_at` to `changes["updated_at"]`.
        NoCapacityError if the server is gone, not online or full (the task is unchanged);
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
        """Newest first."""

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
        reads), and `after` is None only when nothing is left."""

    @abstractmethod
    def pending_by_priority(self) -> dict[int, int]:
        """How many tasks are PENDING at each priority (only priorities with some)."""

    @abstractmethod
    def pending_tasks(self, limit: int, *, priority: int | None = None) -> list[Task]:
        """PENDING tasks, highest priority first, then oldest `queued_at` first."""

    @abstractmethod
    def count_pending(self) -> int:
        """How many tasks are PENDING (the backlog), from the PENDING index."""

    @abstractmethod
    def processing_due(self, before: int, limit: int) -> list[Task]:
        """PROCESSING tasks whose deadline is at or before `before`, earliest first."""

    @abstractmethod
    def processing_on_server(self, server_id: str, limit: int = 1000) -> list[Task]: ...

    # -- streamed output -----------------------------------------------------------------

    @abstractmethod
    def append_output(self, task: Task, chunk: OutputChunk, size: int) -> Task:
        """Store `chunk` (its index is `task.output_chunks`) and count it on the task
        (`output_chunks` + 1, `output_bytes` + `size`) in one atomic write, if the task is
        still PROCESSING on `task.server_id` with `task.attempts` and `task.output_chunks`.
        Returns the task as written; StaleWriteError(current) otherwise (nothing stored)."""

    @abstractmethod
    def task_output(self, task_id: str, *, after: int = -1, limit: int = 100) -> list[OutputChunk]:
        """The task's chunks with an index above `after`, in index order, at most `limit`."""

    # -- servers -------------------------------------------------------------------------

    @abstractmethod
    def put_server(self, server: Server) -> None:
        """Register a server. StaleWriteError if the id is taken."""

    @abstractmethod
    def get_server(self, server_id: str) -> Server | None: ...

    @abstractmethod
    def list_servers(self) -> list[Server]:
        """Every registered server (a fleet: tens to a few thousand), ordered by id."""

    @abstractmethod
    def update_server(self, server_id: str, changes: Mapping[str, Any], *, version: int) -> Server:
        """Apply `changes` if the server's version is `version`; bumps the version.
        Never touches the slot count. StaleWriteError(current) otherwise."""

    @abstractmethod
    def delete_server(self, server_id: str) -> Server | None:
        """Remove and return the server (None if it was not there)."""

    @abstractmethod
    def set_active_tasks(
        self, server_id: str, value: int, *, expected: int, last_claim_at: int | EllipsisType | None = ...
    ) -> bool:
        """Reconciliation only: set the slot count if it is still `expected` and, when
        `last_claim_at` is given, the server's `last_claim_at` is still that (every claim sets
        it): the count may have gone up and back down meanwhile, which `expected` alone misses."""

    # -- settings, counters, rate windows, idempotency -----------------------------------

    @abstractmethod
    def get_setting(self, name: str) -> Any | None: ...

    @abstractmethod
    def put_setting(self, name: str, value: Any) -> None: ...

    @abstractmethod
    def next_in_sequence(self, name: str) -> int:
        """Atomically increment and return a shared counter (1, 2, 3, ...)."""

    @abstractmethod
    def add_counters(self, key: str, increments: Mapping[str, int], *, expires_at: int) -> None:
        """Atomically add to named counters under `key` (statistics buckets)."""

    @abstractmethod
    def add_counters_once(
        self, batch_id: str, increments: Mapping[str, Mapping[str, int]], *, expires_at: int, now_s: int
    ) -> bool:
        """Add `increments` (key -> {name: amount}) unless a batch with `batch_id` was added
        in the last two days: True if added (or nothing to add), False if it had been. A
        DynamoDB Streams consumer retried on the same records counts them once."""

    @abstractmethod
    def get_counters(self, keys: Collection[str]) -> dict[str, dict[str, int]]:
        """key -> {name: value} for the keys that exist."""

    @abstractmethod
    def hit_rate_window(self, key: str, *, expires_at: int) -> int:
        """Count one request in the window `key`; return the count including this one."""

    @abstractmethod
    def put_idempotency(self, record: IdempotencyRecord, *, now_s: int) -> IdempotencyRecord | None:
        """Store `record` unless a record with its key that expires after `now_s` exists;
        return that record if so (and store nothing)."""

    # -- webhook deliveries --------------------------------------------------------------

    @abstractmethod
    def put_delivery(self, delivery: WebhookDelivery) -> None:
        """Store a new delivery. StaleWriteError if one exists for that task and round."""

    @abstractmethod
    def deliveries_of_task(self, task_id: str) -> list[WebhookDelivery]:
        """Every delivery of the task, oldest round first."""

    @abstractmethod
    def due_deliveries(self, now: int, limit: int) -> list[WebhookDelivery]:
        """PENDING deliveries whose next attempt is at or before `now`, earliest first."""

    @abstractmethod
    def update_delivery(
        self, delivery: WebhookDelivery, changes: Mapping[str, Any], *, due_by: int | None = None
    ) -> WebhookDelivery:
        """Apply `changes` if the delivery is still PENDING with `delivery.attempts` (and, when
        `due_by` is given, its next attempt is at or before it). Returns it as written.
        StaleWriteError(current) otherwise: someone else claimed or settled it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def purge_expired(self, now_s: int) -> int:
        """Drop finished tasks and windows past their expiry; stores with native TTL
        (DynamoDB) leave it to the store and return 0."""
        return 0

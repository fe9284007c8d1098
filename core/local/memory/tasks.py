"""Tasks in memory: compare-and-set on the stored task; claim and release change the task
and its server's slot under one lock, both or neither."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from core.domain.models import Server, ServerStatus, Task, TaskStatus, WebhookDelivery
from core.errors import NoCapacityError, OwnerLimitError, StaleWriteError
from core.local.memory._data import MemoryBase, changed, check_fields, copy
from core.ports.storage import CLOCK_SKEW_MS, TaskPage, TaskStore, capability_set, position, update_sources


class MemoryTaskStore(MemoryBase, TaskStore):
    def put_task(self, task: Task) -> None:
        with self._lock:
            if task.id in self.data.tasks:
                raise StaleWriteError(None)
            self.data.tasks[task.id] = copy(task)

    def get_task(self, task_id: str) -> Task | None:
        with self._lock:
            return self._task(task_id)

    def _task(self, task_id: str) -> Task | None:
        task = self.data.tasks.get(task_id)
        return None if task is None else copy(task)

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
        check_fields(Task, changes)
        if "id" in changes:
            raise ValueError("a task's id never changes")
        statuses = update_sources(from_status, changes)
        expected = {"attempts": attempts, "server_id": server_id, "retries": retries}
        with self._lock:
            current = self.data.tasks.get(task_id)
            if current is None or current.status not in statuses or not _matches(current, expected):
                raise StaleWriteError(self._task(task_id))
            written = self.data.tasks[task_id] = changed(Task, current, changes)
            if delivery is not None:
                self._put_delivery_if_new(delivery)
            return copy(written)

    def claim_task(self, task: Task, changes: Mapping[str, Any], *, owner_limit: int = 0) -> Task:
        check_fields(Task, changes)
        claimed = msgspec.structs.replace(task, **changes)
        if TaskStatus(claimed.status) is not TaskStatus.PROCESSING or claimed.server_id is None:
            raise ValueError("a claim sets status PROCESSING and server_id")
        with self._lock:
            current = self.data.tasks.get(task.id)
            if (
                current is None
                or current.status is not TaskStatus.PENDING
                or current.attempts != task.attempts
            ):
                raise StaleWriteError(self._task(task.id))
            server = self.data.servers.get(claimed.server_id)
            if server is None or server.status is not ServerStatus.ONLINE or server.free_slots == 0:
                raise NoCapacityError(claimed.server_id)
            in_flight = self.data.in_flight.get(task.owner, 0)
            if owner_limit > 0 and in_flight >= owner_limit:
                raise OwnerLimitError(task.owner)
            slot: dict[str, Any] = {"active_tasks": server.active_tasks + 1}
            if "updated_at" in changes:
                slot["last_claim_at"] = changes["updated_at"]
            # Both written or neither: a value that does not convert raises before either.
            moved, taken = changed(Task, current, changes), changed(Server, server, slot)
            self.data.tasks[task.id], self.data.servers[server.id] = moved, taken
            self.data.in_flight[task.owner] = in_flight + 1
        return claimed

    def release_task(
        self,
        task: Task,
        changes: Mapping[str, Any],
        *,
        server_counters: Mapping[str, int] | None = None,
        server_values: Mapping[str, Any] | None = None,
        delivery: WebhookDelivery | None = None,
    ) -> Task:
        check_fields(Task, changes)
        released = msgspec.structs.replace(task, **changes)
        if TaskStatus(released.status) is TaskStatus.PROCESSING or task.server_id is None:
            raise ValueError("a release moves a task that has a server out of PROCESSING")
        counters, fixed = dict(server_counters or {}), dict(server_values or {})
        check_fields(Server, counters.keys() | fixed.keys())
        if {"active_tasks", "version", "id"} & (counters.keys() | fixed.keys()):
            raise ValueError(f"not server counters or values: {sorted(counters)}, {sorted(fixed)}")
        expected = {"attempts": task.attempts, "server_id": task.server_id}
        # Not a registration made under the same id after the task started.
        newest = 2**62 if task.started_at is None else task.started_at + CLOCK_SKEW_MS
        with self._lock:
            current = self.data.tasks.get(task.id)
            if (
                current is None
                or current.status is not TaskStatus.PROCESSING
                or not _matches(current, expected)
            ):
                raise StaleWriteError(self._task(task.id))
            moved = changed(Task, current, changes)
            server = self.data.servers.get(task.server_id)
            if server is not None and server.active_tasks > 0 and server.registered_at <= newest:
                slot = {name: getattr(server, name) + amount for name, amount in counters.items()}
                slot |= fixed | {"active_tasks": server.active_tasks - 1}
                self.data.servers[server.id] = changed(Server, server, slot)
            self.data.tasks[task.id] = moved
            self.data.in_flight[task.owner] = self.data.in_flight.get(task.owner, 0) - 1
            if delivery is not None:
                self._put_delivery_if_new(delivery)
        return released

    def tasks_by_owner(self, owner: str, limit: int = 50) -> list[Task]:
        return self._tasks(lambda t: t.owner == owner, position, limit, newest_first=True)

    def list_tasks(
        self,
        limit: int,
        *,
        status: TaskStatus | None = None,
        owner: str | None = None,
        before: str | None = None,
    ) -> TaskPage:
        def keep(task: Task) -> bool:
            return (
                (status is None or task.status is status)
                and (owner is None or task.owner == owner)
                and (before is None or position(task) < before)
            )

        found = self._tasks(keep, position, limit + 1, newest_first=True)
        page = found[:limit]
        return TaskPage(page, position(page[-1]) if len(found) > limit else None)

    def pending_by_need(self) -> dict[tuple[int, tuple[str, ...]], int]:
        counts: dict[tuple[int, tuple[str, ...]], int] = {}
        with self._lock:
            for task in self.data.tasks.values():
                if task.status is TaskStatus.PENDING:
                    key = (task.priority, capability_set(task.capabilities))
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def processing_due(self, before: int, limit: int) -> list[Task]:
        return self._tasks(
            lambda t: t.status is TaskStatus.PROCESSING and t.deadline is not None and t.deadline <= before,
            lambda t: (t.deadline, t.id),
            limit,
        )

    def processing_on_server(self, server_id: str, limit: int = 1000) -> list[Task]:
        return self._tasks(
            lambda t: t.status is TaskStatus.PROCESSING and t.server_id == server_id, lambda t: t.id, limit
        )

    def _tasks(
        self,
        keep: Callable[[Task], bool],
        order: Callable[[Task], Any],
        limit: int,
        *,
        newest_first: bool = False,
    ) -> list[Task]:
        """A scan, sorted as the index the other adapters read: this store holds test data."""
        with self._lock:
            found = sorted(filter(keep, self.data.tasks.values()), key=order, reverse=newest_first)
            return [copy(task) for task in found[: max(limit, 0)]]


def _matches(task: Task, expected: Mapping[str, Any]) -> bool:
    """The task has each expected value that is given (not None)."""
    return all(value is None or getattr(task, name) == value for name, value in expected.items())

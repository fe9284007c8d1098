"""Tasks in the table, written: patterns 1-5 of the access-pattern table (see the package).
Every write derives the task's index keys from the task as it leaves it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, cast

import msgspec

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb._requests import DynamoTable
from core.aws.dynamodb.items import (
    INDEX_GROUPS,
    OUTCOME_FIELDS,
    OUTCOME_INLINE_LIMIT,
    OUTCOME_REF,
    PAYLOAD_REF,
    check_fields,
    delivery_to_item,
    field_value,
    field_values,
    index_attributes,
    index_inputs,
    merge_outcome,
    outcome_size,
    task_index_attributes,
    task_to_item,
    to_value,
)
from core.aws.dynamodb.keys import OUTCOME, TASK, server_key, task_key, task_partition
from core.aws.dynamodb.scheduling import in_flight_change, pending_change
from core.aws.payloads import PAYLOAD_INLINE_LIMIT
from core.domain.models import Server, ServerStatus, Task, TaskStatus, WebhookDelivery
from core.errors import NoCapacityError, OwnerLimitError, StaleWriteError
from core.ports.storage import CLOCK_SKEW_MS, TaskStore, update_sources

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, QueryInputTypeDef

    from core.aws.dynamodb.items import Item


class DynamoTaskWrites(DynamoTable, TaskStore):
    def put_task(self, task: Task) -> None:
        """Pattern 1, a large payload first to the payload bucket (the item keeping its key);
        with pattern 33's count when the task is PENDING, in one transaction."""
        item = task_to_item(task)
        if self.payloads is not None and len(item["payload"]["S"]) > PAYLOAD_INLINE_LIMIT:
            item[PAYLOAD_REF] = {"S": self.payloads.put(task.id, item.pop("payload")["S"])}
        if task.status is not TaskStatus.PENDING:
            self._put_new(item)
            return
        new: dict[str, Any] = {"Put": {"TableName": self.table_name, "Item": item}}
        new["Put"]["ConditionExpression"] = "attribute_not_exists(PK)"
        (reason, _) = self._transact(new, pending_change(self.table_name, task, +1))
        if reason is not None:
            raise StaleWriteError(None)

    def get_task(self, task_id: str) -> Task | None:
        """Pattern 2: the task item (its large payload and outcome read from the bucket) and,
        for a task an earlier version finished with a large outcome, its OUTCOME item."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            # OUTCOME and TASK; the partition's output chunks (CHUNK#...) sort before both.
            "KeyConditionExpression": "PK = :task AND SK >= :outcome",
            "ExpressionAttributeValues": {
                ":task": {"S": task_partition(task_id)},
                ":outcome": {"S": OUTCOME},
            },
            "ConsistentRead": True,
        }
        items = {item["SK"]["S"]: item for item in self._query(request)}
        if TASK not in items:
            return None
        return self._task_from(merge_outcome(items[TASK], items.get(OUTCOME)))

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
        """Pattern 3 (with pattern 26 in one transaction when there is a delivery, and pattern
        30's count when the task enters or leaves PENDING)."""
        check_fields(Task, changes)
        if "id" in changes:
            raise ValueError("a task's id never changes")
        statuses = update_sources(from_status, changes)
        if not statuses:
            raise StaleWriteError(self.get_task(task_id))
        statuses, counted, delta = self._pending_move(task_id, changes, statuses)
        update = Expression()
        values = field_values(changes)
        if outcome_size(values) > OUTCOME_INLINE_LIMIT:
            raise ValueError("a large result or error is written by release_task")
        for name, value in values.items():
            update.assign(name, value)
        if any(name in changes for name in OUTCOME_FIELDS):
            update.assign(OUTCOME_REF, None)
        if not changes:  # an update needs an action; this one checks the condition only
            update.assign("id", task_id)
        status = update.name("status")
        update.condition(f"{status} IN ({', '.join(update.value(s.value) for s in statuses)})")
        if attempts is not None:
            update.equals("attempts", attempts)
        if server_id is not None:
            update.equals("server_id", server_id)
        if retries is not None:
            update.equals("retries", retries)
        self._derive_index_keys(update, task_id, changes, statuses, server_id, counted)
        if delivery is None and counted is None:
            return self._update_or_stale(task_key(task_id), update, self._task_from)
        extra = [] if delivery is None else [self._put(delivery_to_item(delivery))]
        if counted is not None:
            extra.append(pending_change(self.table_name, counted, delta))
        (task_reason, *_) = self._transact(self._update(task_key(task_id), update, return_old=True), *extra)
        if task_reason is not None:
            raise StaleWriteError(self._current_task(task_id, task_reason))
        if counted is not None:
            # The task as this write left it: read before it, pinned to that status by the
            # write's condition. A read after it could already show the next writer's change.
            return msgspec.structs.replace(counted, **changes)
        current = self.get_task(task_id)
        if current is None:
            raise StaleWriteError(None)
        return current

    def _pending_move(
        self, task_id: str, changes: Mapping[str, Any], statuses: frozenset[TaskStatus]
    ) -> tuple[frozenset[TaskStatus], Task | None, int]:
        """Whether this write moves the task into (+1) or out of (-1) PENDING, and so its owner
        queue's count (pattern 33) with it. When `statuses` leaves that open (PENDING among
        others), the task is read and the write pinned to the status it has."""
        if "status" not in changes:
            return statuses, None, 0
        entering = TaskStatus(changes["status"]) is TaskStatus.PENDING
        if TaskStatus.PENDING not in statuses and not entering:
            return statuses, None, 0
        current = self.get_task(task_id)
        if current is None or current.status not in statuses:
            raise StaleWriteError(current)
        if (current.status is TaskStatus.PENDING) == entering:
            return (frozenset({current.status}) if len(statuses) > 1 else statuses), None, 0
        return frozenset({current.status}), current, +1 if entering else -1

    def _derive_index_keys(
        self,
        update: Expression,
        task_id: str,
        changes: Mapping[str, Any],
        statuses: frozenset[TaskStatus],
        server_id: str | None,
        read: Task | None = None,
    ) -> None:
        """Add to `update` the index keys that `changes` move, computed from the task as it
        will be. A field they need that neither `changes` nor the condition pins (priority,
        when a task is retried) is read first, and the write made conditional on it."""
        status_moves = "status" in changes and statuses != {TaskStatus(changes["status"])}
        groups = [
            group
            for group, inputs in INDEX_GROUPS.items()
            if any(name in changes for name in inputs if name != "status")
            or (status_moves and "status" in inputs)
        ]
        if not groups:
            return
        known: dict[str, Any] = {"id": task_id, **changes}
        if server_id is not None:
            known.setdefault("server_id", server_id)
        if "status" not in known and len(statuses) == 1:
            (known["status"],) = statuses

        def missing() -> set[str]:
            if "status" not in known:
                return {"status"}
            status = TaskStatus(known["status"])
            return {name for g in groups for name in index_inputs(g, status)} - known.keys()

        if missing():
            current = read or self.get_task(task_id)  # `read`: already read, and pinned
            if current is None or current.status not in statuses:
                raise StaleWriteError(current)
            if "status" not in known:
                known["status"] = current.status
                update.equals("status", current.status.value)
            for name in missing():
                value = known[name] = getattr(current, name)
                update.equals(name, None if value is None else field_value(name, value))
        for group in groups:
            for attribute, derived in index_attributes(group, known).items():
                update.assign(attribute, None if derived is None else to_value(derived))

    def claim_task(self, task: Task, changes: Mapping[str, Any], *, owner_limit: int = 0) -> Task:
        """Pattern 4: one transaction takes the slot, moves the task and its counts (33, 34)."""
        claimed = msgspec.structs.replace(task, **changes)
        if TaskStatus(claimed.status) is not TaskStatus.PROCESSING or claimed.server_id is None:
            raise ValueError("a claim sets status PROCESSING and server_id")
        slot = Expression()
        active = slot.name("active_tasks")
        slot.set(f"{active} = {active} + {slot.value(1)}")
        if "updated_at" in changes:
            slot.assign("last_claim_at", changes["updated_at"])
        slot.condition("attribute_exists(PK)")
        slot.equals("status", ServerStatus.ONLINE.value)
        slot.condition(f"{active} < {slot.name('max_concurrent')}")
        move = self._task_write(claimed, changes)
        move.equals("status", TaskStatus.PENDING.value)
        move.equals("attempts", task.attempts)
        server_reason, task_reason, _, owner_reason = self._transact(
            self._update(server_key(claimed.server_id), slot),
            self._update(task_key(task.id), move, return_old=True),
            pending_change(self.table_name, task, -1),
            in_flight_change(
                self.table_name, task.owner, +1, limit=owner_limit, changed_at=changes.get("updated_at")
            ),
        )
        if task_reason is not None:
            raise StaleWriteError(self._current_task(task.id, task_reason))
        if server_reason is not None:
            raise NoCapacityError(claimed.server_id)
        if owner_reason is not None:
            raise OwnerLimitError(task.owner)
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
        """Pattern 5: one transaction moves the task and frees the slot (and puts the
        delivery, pattern 26, when given), a large result or error written to the bucket
        first. If the server was unregistered meanwhile (or registered afresh under the same
        id after the task started), the task still moves, alone, on the same condition."""
        released = msgspec.structs.replace(task, **changes)
        if TaskStatus(released.status) is TaskStatus.PROCESSING or task.server_id is None:
            raise ValueError("a release moves a task that has a server out of PROCESSING")
        counters = dict(server_counters or {})
        check_fields(Server, counters)
        check_fields(Server, server_values or {})
        if {"active_tasks", "version", "id"} & (counters.keys() | (server_values or {}).keys()):
            raise ValueError(
                f"not server counters or values: {sorted(counters)}, {sorted(server_values or {})}"
            )
        values = field_values(changes)
        outcome_moves = any(name in changes for name in OUTCOME_FIELDS)
        outcome_ref = self._place_outcome(released, values) if outcome_moves else None
        move = self._task_write(released, changes, values)
        if outcome_moves:
            move.assign(OUTCOME_REF, outcome_ref)
        move.equals("status", TaskStatus.PROCESSING.value)
        move.equals("attempts", task.attempts)
        move.equals("server_id", task.server_id)
        slot = Expression()
        active = slot.name("active_tasks")
        slot.set(f"{active} = {active} - {slot.value(1)}")
        for name, amount in counters.items():
            slot.add(name, amount)
        for name, value in field_values(server_values or {}).items():
            slot.assign(name, value)
        slot.condition(f"attribute_exists(PK) AND {active} > {slot.value(0)}")
        if task.started_at is not None:  # not a registration made after the task started
            newest = task.started_at + CLOCK_SKEW_MS
            slot.condition(f"{slot.name('registered_at')} <= {slot.value(newest)}")
        puts = [] if delivery is None else [self._put(delivery_to_item(delivery))]
        # Patterns 33 and 34: the owner has one fewer in flight; a requeued task is counted in
        # its owner queue again.
        puts.append(in_flight_change(self.table_name, task.owner, -1, changed_at=changes.get("updated_at")))
        if TaskStatus(released.status) is TaskStatus.PENDING:
            puts.append(pending_change(self.table_name, task, +1))
        task_reason, server_reason, *_ = self._transact(
            self._update(task_key(task.id), move, return_old=True),
            self._update(server_key(task.server_id), slot),
            *puts,
        )
        if task_reason is not None:
            raise StaleWriteError(self._current_task(task.id, task_reason))
        if server_reason is not None:
            (task_reason,) = self._transact(self._update(task_key(task.id), move, return_old=True), *puts)[:1]
            if task_reason is not None:
                raise StaleWriteError(self._current_task(task.id, task_reason))
        return released

    def _place_outcome(self, task: Task, values: dict[str, Any]) -> AttributeValueTypeDef | None:
        """Put `task`'s result and error (the task as the write leaves it: a completion keeps
        an earlier attempt's error) into `values`: inline up to OUTCOME_INLINE_LIMIT, else in
        a new bucket object, written now, before the transaction (whose condition decides
        whether the task keeps its key). Returns the task item's OUTCOME_REF (None: removed).
        An unreachable bucket raises UnavailableError with nothing written to the table."""
        outcome = field_values({name: getattr(task, name) for name in OUTCOME_FIELDS})
        values.update(outcome)
        if self.payloads is None or outcome_size(outcome) <= OUTCOME_INLINE_LIMIT:
            return None  # without a bucket, DynamoDB's 400 KB item limit is the only one
        stored = {name: value["S"] for name, value in outcome.items() if value is not None and "S" in value}
        key = self.payloads.put_outcome(task.id, task.attempts, stored)
        values.update(dict.fromkeys(OUTCOME_FIELDS))  # removed from the item
        return {"S": key}

    def _task_write(
        self, task: Task, changes: Mapping[str, Any], values: Mapping[str, Any] | None = None
    ) -> Expression:
        """`changes` (or their attribute `values`, when given) and every index key of `task`
        (the task as they leave it)."""
        check_fields(Task, changes)
        write = Expression()
        for name, value in (field_values(changes) if values is None else values).items():
            write.assign(name, value)
        for attribute, derived in task_index_attributes(task).items():
            write.assign(attribute, None if derived is None else to_value(derived))
        return write

    def _current_task(self, task_id: str, reason: Mapping[str, Any]) -> Task | None:
        if "Item" in reason:
            return self._task_from(cast("Item", reason["Item"]))
        return self.get_task(task_id)

"""DynamoDB adapter of the Store: one table, on-demand, every key a string (`PK`, `SK`), TTL
on `expiresAt` (epoch seconds). The table is the `Table` resource in template.yaml; the items'
`to_item` / `from_item` and key builders are in `core.aws.dynamodb_items`.

| Item        | PK                | SK          | Other attributes                              |
|-------------|-------------------|-------------|-----------------------------------------------|
| Task        | TASK#<id>         | TASK        | Task fields; GSI1-3 keys; expiresAt when done |
| Server      | SERVERS           | SERVER#<id> | Server fields                                 |
| Setting     | SETTINGS          | <name>      | value (JSON)                                  |
| Sequence    | SEQUENCE          | <name>      | n                                             |
| Counters    | COUNTER#<key>     | COUNTER     | one number per counter name; expiresAt        |
| Rate window | RATE#<key>        | RATE        | hits; expiresAt                               |
| Idempotency | IDEMPOTENCY#<key> | IDEMPOTENCY | body_hash, task_id; expiresAt                 |
| Delivery    | WEBHOOK#<task id> | DELIVERY#<round:6> | WebhookDelivery fields; GSI2 while due; expiresAt |
| Connection  | CONN#<conn>       | CONN        | sub, roles, tasks (string set); expiresAt     |
| Subscription| SUBS#<task>       | CONN#<conn> | connection_id; expiresAt                      |

All servers share one partition, so listing them is one strongly consistent Query. A partition
takes about 1,000 writes/s (heartbeats, health, slots): ample for a few thousand servers.

Sparse global secondary indexes (projection ALL). This adapter derives their keys from the
task on every task write: set while the state needs them, removed otherwise.

| Index    | PK                | SK                                         | Present while |
|----------|-------------------|--------------------------------------------|---------------|
| ByOwner  | GSI1PK OWNER#<o>  | GSI1SK <createdAt:13>#<id>                 | always        |
| ByStatus | GSI2PK PENDING    | GSI2SK <10-priority:2>#<queuedAt:13>#<id>  | PENDING       |
| ByStatus | GSI2PK PROCESSING | GSI2SK <deadline:13, 9999999999999>#<id>   | PROCESSING    |
| ByServer | GSI3PK SERVER#<s> | GSI3SK <id>                                | PROCESSING    |
| ByStatus | GSI2PK WEBHOOK_DUE | GSI2SK <nextAttemptAt:13>#<task>#<round:6> | delivery PENDING |
| ByRecent | GSI4PK RECENT#<st>| GSI4SK <createdAt:13>#<id>                 | always        |

A finished task carries expiresAt (its `expires_at`) and TTL drops it. Index reads are
eventually consistent; every write is conditional on the base item, so a stale index entry
costs a lost write (StaleWriteError), never a wrong one.

| Access pattern              | Index    | Key condition                     | Example           |
|-----------------------------|----------|-----------------------------------|-------------------|
| 1 Create a task             | table    | TASK#<id> / TASK, if new          | TASK#t-1          |
| 2 Get a task                | table    | TASK#<id> / TASK                  | TASK#t-1          |
| 3 Transition a task         | table    | TASK#<id> / TASK, if status IN    | TASK#t-1          |
| 4 Claim a task: one write   | table    | SERVER#<s> if a slot is free,     | SERVER#gpu-1,     |
|                             |          | + TASK#<id> if still PENDING      | TASK#t-1          |
| 5 Release a task: one write | table    | TASK#<id> if PROCESSING on <s>,   | TASK#t-1,         |
|                             |          | + SERVER#<s> (slot, counters)     | SERVER#gpu-1      |
| 6 Tasks of an owner, newest | ByOwner  | GSI1PK = OWNER#<owner>, desc.     | OWNER#alice       |
| 7 Pending, best first       | ByStatus | GSI2PK = PENDING                  | PENDING           |
|   ... of one priority       | ByStatus | AND begins_with(GSI2SK, <10-p>#)  | 03# (priority 7)  |
| 8 Processing past deadline  | ByStatus | GSI2PK = PROCESSING AND           | PROCESSING,       |
|                             |          | GSI2SK <= <before:13>#~           | 1700000000000#~   |
| 9 Processing on a server    | ByServer | GSI3PK = SERVER#<id>              | SERVER#gpu-1      |
| 9a Tasks newest first       | ByRecent | GSI4PK = RECENT#<status> AND      | RECENT#COMPLETED, |
|    (one status, or all six  |          | GSI4SK < <before>, descending     | 1700000000000#t-9 |
|    partitions merged)       |          |                                   |                   |
| 9b An owner's, one status   | ByOwner  | pattern 6, FilterExpression on    | OWNER#alice       |
|                             |          | status; at most 1,000 read a call |                   |
| 9c PENDING per priority     | ByStatus | GSI2PK = PENDING, GSI2SK only     | PENDING           |
| 10 Register a server        | table    | SERVERS / SERVER#<id>, if new     | SERVER#gpu-1      |
| 11 Get, update, delete one  | table    | SERVERS / SERVER#<id>,            | SERVER#gpu-1      |
|                             |          | update if version = :v            |                   |
| 12 List servers, by id      | table    | PK = SERVERS, strongly consistent | SERVERS           |
| 13 Reconcile a slot count   | table    | SERVERS / SERVER#<id>,            | SERVER#gpu-1      |
|                             |          | if active_tasks = :expected (and  |                   |
|                             |          | last_claim_at = :last, if given)  |                   |
| 14 Get, put a setting       | table    | SETTINGS / <name>                 | lb_algorithm      |
| 15 Next in a sequence       | table    | SEQUENCE / <name>, ADD n :1       | round_robin       |
| 16 Add to, read counters    | table    | COUNTER#<key> / COUNTER; BatchGet | COUNTER#<day>     |
| 17 Count a rate-window hit  | table    | RATE#<key> / RATE, ADD hits :1    | RATE#<sub>#<bucket>#<min> |
| 18 Claim an idempotency key | table    | IDEMPOTENCY#<key>, if new or      | IDEMPOTENCY#<key> |
|                             |          | expiresAt <= :now                 |                   |
| 19 Add a counter batch once | table    | COUNTERBATCH#<id>#<n>, if new or  | COUNTERBATCH#9f2e#0 |
|                             |          | expiresAt <= :now,                |                   |
|                             |          | + up to 99 COUNTER#<key> ADDs     |                   |
| 20 Open a WebSocket conn.   | table    | CONN#<conn> / CONN                | CONN#R2D2dcQ5oA=  |
| 21 Get a connection         | table    | CONN#<conn> / CONN, consistent    | CONN#R2D2dcQ5oA=  |
| 22 Subscribe to a task      | table    | CONN#<conn>: ADD tasks if open    | CONN#R2D2dcQ5oA=, |
|                             |          | and size(tasks) < max; then put   | SUBS#t-1 /        |
|                             |          | SUBS#<task> / CONN#<conn>         | CONN#R2D2dcQ5oA=  |
| 23 Unsubscribe, end one     | table    | delete SUBS#<task> / CONN#<conn>; | SUBS#t-1          |
|                             |          | CONN#<conn>: DELETE tasks if open |                   |
| 24 Subscribers of a task    | table    | PK = SUBS#<task>, consistent      | SUBS#t-1          |
| 25 Close a connection       | table    | delete CONN#<conn> (ALL_OLD), then| CONN#R2D2dcQ5oA=  |
|                             |          | BatchWrite delete its SUBS items  |                   |
| 26 Put a webhook delivery   | table    | WEBHOOK#<task> / DELIVERY#<r>;    | WEBHOOK#t-1       |
|                             |          | with pattern 3 or 5 when finishing |                  |
| 27 Deliveries of a task     | table    | PK = WEBHOOK#<task>               | WEBHOOK#t-1       |
| 28 Deliveries due           | ByStatus | GSI2PK = WEBHOOK_DUE AND          | WEBHOOK_DUE,      |
|                             |          | GSI2SK <= <now:13>#~              | 1700000000000#~   |
| 29 Claim, settle a delivery | table    | WEBHOOK#<task> / DELIVERY#<r>, if | WEBHOOK#t-1       |
|                             |          | state = pending AND attempts = :n |                   |

Patterns 30-31 (a task's streamed output, CHUNK#<index> items in its partition) are
core.aws.dynamodb_output. Patterns 20-25 are core.aws.dynamodb_connections (AWS only; one machine follows tasks in
memory). A task's stream records carry its changes to the WebSocket notifier.

Nothing scans. Throttling and timeouts (after botocore's own retries) become UnavailableError;
a failed condition becomes StaleWriteError or NoCapacityError.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3
import msgspec
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from core.aws import dynamodb_output
from core.aws.dynamodb_items import (
    DELIVERIES_DUE,
    HIGHEST,
    INDEX_GROUPS,
    OUTCOME_FIELDS,
    OUTCOME_INLINE_LIMIT,
    OUTCOME_REF,
    TTL,
    Expression,
    check_fields,
    counter_batch_key,
    counter_key,
    counters_name,
    delivery_from_item,
    delivery_index_attributes,
    delivery_key,
    delivery_to_item,
    field_value,
    field_values,
    idempotency_key,
    index_attributes,
    index_inputs,
    merge_outcome,
    outcome_key,
    outcome_size,
    pending_prefix,
    rate_key,
    recent_partition,
    sequence_key,
    server_from_item,
    server_key,
    server_to_item,
    setting_key,
    task_from_item,
    task_index_attributes,
    task_key,
    task_to_item,
    to_value,
)
from core.domain.models import (
    DeliveryState,
    OutputChunk,
    Server,
    ServerStatus,
    Task,
    TaskStatus,
    WebhookDelivery,
)
from core.errors import NoCapacityError, StaleWriteError, UnavailableError
from core.ports.storage import CLOCK_SKEW_MS, IdempotencyRecord, Store, TaskPage, position, update_sources

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef, TransactWriteItemTypeDef

    from core.aws.dynamodb_items import Item

__all__ = ["DynamoStore"]

T = TypeVar("T", Task, Server, WebhookDelivery)

BUSY = "Storage is busy, retry shortly"
_BUSY_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        # The same, as a transaction's cancellation reasons.
        "ProvisionedThroughputExceeded",
        "ThrottlingError",
    }
)
_CONDITION_FAILED = "ConditionalCheckFailedException"
_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
# Two transactions on one item at once: the loser is cancelled and may simply try again.
_CONFLICT_RETRIES = 4
# A transaction holds up to 100 writes: a batch marker and 99 counter keys.
_COUNTER_BATCH_KEYS = 99
_COUNTER_BATCH_TTL_S = 2 * 86_400
_CONFLICT_BACKOFF_S = 0.025
# Pattern 9b reads at most this many of an owner's tasks per call, whatever the filter keeps.
_FILTERED_READ_BUDGET = 1_000
_BATCH_GET_LIMIT = 100


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _old_item(error: ClientError) -> Item | None:
    """The item as it was when a condition failed (ReturnValuesOnConditionCheckFailure)."""
    response = cast("Mapping[str, Any]", error.response)
    return cast("Item | None", response.get("Item"))


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except ClientError as error:
        if _code(error) in _BUSY_CODES:
            raise UnavailableError(BUSY) from error
        raise
    except (BotocoreConnectionError, HTTPClientError) as error:  # timeouts, resets, DNS
        raise UnavailableError(BUSY) from error


class DynamoStore(Store):
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        """`client` is created once per process when not given (Lambda reuses it)."""
        self.table_name = table_name
        self._client = client or boto3.client("dynamodb", config=_CLIENT_CONFIG)

    @property
    def client(self) -> DynamoDBClient:
        """The one client, for other adapters on the same table (WebSocket connections)."""
        return self._client

    # -- tasks ---------------------------------------------------------------------------

    def put_task(self, task: Task) -> None:
        """Pattern 1."""
        self._put_new(task_to_item(task))

    def get_task(self, task_id: str) -> Task | None:
        """Pattern 2: the task item and, when its outcome is large, the OUTCOME item."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            # OUTCOME and TASK: the partition's output chunks (CHUNK#...) sort before both.
            "KeyConditionExpression": "PK = :task AND SK >= :outcome",
            "ExpressionAttributeValues": {":task": task_key(task_id)["PK"], ":outcome": {"S": "OUTCOME"}},
            "ConsistentRead": True,
        }
        items = {item["SK"]["S"]: item for item in self._query(request)}
        if "TASK" not in items:
            return None
        return task_from_item(merge_outcome(items["TASK"], items.get("OUTCOME")))

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
        """Pattern 3 (with pattern 26 in one transaction when there is a delivery)."""
        check_fields(Task, changes)
        if "id" in changes:
            raise ValueError("a task's id never changes")
        statuses = update_sources(from_status, changes)
        if not statuses:
            raise StaleWriteError(self.get_task(task_id))
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
        self._derive_index_keys(update, task_id, changes, statuses, server_id)
        if delivery is None:
            return self._update_or_stale(task_key(task_id), update, task_from_item)
        (task_reason, _) = self._transact(
            self._update(task_key(task_id), update, return_old=True), self._put(delivery_to_item(delivery))
        )
        current = self.get_task(task_id)
        if task_reason is not None or current is None:
            raise StaleWriteError(self._current_task(task_id, task_reason) if task_reason else current)
        return current

    def _derive_index_keys(
        self,
        update: Expression,
        task_id: str,
        changes: Mapping[str, Any],
        statuses: frozenset[TaskStatus],
        server_id: str | None,
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
            current = self.get_task(task_id)
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

    def claim_task(self, task: Task, changes: Mapping[str, Any]) -> Task:
        """Pattern 4: one transaction takes the slot and moves the task."""
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
        server_reason, task_reason = self._transact(
            self._update(server_key(claimed.server_id), slot),
            self._update(task_key(task.id), move, return_old=True),
        )
        if task_reason is not None:
            raise StaleWriteError(self._current_task(task.id, task_reason))
        if server_reason is not None:
            raise NoCapacityError(claimed.server_id)
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
        delivery, pattern 26, when given). If the server was unregistered meanwhile (or
        registered afresh under the same id after the task started), the task still moves,
        alone, on the same condition."""
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
        outcome: dict[str, Any] | None = None
        if outcome_size(values) > OUTCOME_INLINE_LIMIT:
            outcome = outcome_key(task.id)
            for name in OUTCOME_FIELDS:
                if (value := values.pop(name, None)) is not None:
                    outcome[name] = value
            if released.expires_at is not None:
                outcome[TTL] = to_value(released.expires_at)
        move = self._task_write(released, changes, values)
        move.assign(OUTCOME_REF, True if outcome is not None else None)
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
        puts = [] if outcome is None else [self._put(outcome)]
        if delivery is not None:
            puts.append(self._put(delivery_to_item(delivery)))
        task_reason, server_reason, *_ = self._transact(
            self._update(task_key(task.id), move, return_old=True),
            self._update(server_key(task.server_id), slot),
            *puts,
        )
        if task_reason is not None:
            raise StaleWriteError(self._current_task(task.id, task_reason))
        if server_reason is not None and not puts:
            self._update_or_stale(task_key(task.id), move, task_from_item)
        elif server_reason is not None:
            (task_reason,) = self._transact(self._update(task_key(task.id), move, return_old=True), *puts)[:1]
            if task_reason is not None:
                raise StaleWriteError(self._current_task(task.id, task_reason))
        return released

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
            return task_from_item(cast("Item", reason["Item"]))
        return self.get_task(task_id)

    def tasks_by_owner(self, owner: str, limit: int = 50) -> list[Task]:
        """Pattern 6."""
        return self._query_tasks(limit, "ByOwner", "GSI1PK", f"OWNER#{owner}", newest_first=True)

    def list_tasks(
        self,
        limit: int,
        *,
        status: TaskStatus | None = None,
        owner: str | None = None,
        before: str | None = None,
    ) -> TaskPage:
        """Patterns 6, 9a and 9b."""
        if owner is not None:
            return self._newest(limit, "ByOwner", "GSI1PK", f"OWNER#{owner}", before, status)
        if status is not None:
            return self._newest(limit, "ByRecent", "GSI4PK", recent_partition(status), before)
        # Each status's newest `limit + 1` (one more tells whether a next page exists), merged:
        # six bounded queries, no scan.
        merged = [
            task
            for each in TaskStatus
            for task in self._newest(limit + 1, "ByRecent", "GSI4PK", recent_partition(each), before).tasks
        ]
        merged.sort(key=position, reverse=True)
        page = merged[:limit]
        return TaskPage(page, position(page[-1]) if len(merged) > limit else None)

    def _newest(
        self,
        limit: int,
        index: str,
        partition_key: str,
        partition: str,
        before: str | None,
        status: TaskStatus | None = None,
    ) -> TaskPage:
        query = Expression()
        query.condition(f"{query.name(partition_key)} = {query.value(partition)}")
        sort_key = partition_key.replace("PK", "SK")
        if before is not None:
            query.condition(f"{query.name(sort_key)} < {query.value(before)}")
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": query.key_condition(),
            "ScanIndexForward": False,
            "Limit": limit + 1,
        }
        if status is not None:
            request["FilterExpression"] = f"{query.name('status')} = {query.value(status.value)}"
            request["Limit"] = min(max(limit + 1, 100), _FILTERED_READ_BUDGET)
        request["ExpressionAttributeNames"] = query.names
        request["ExpressionAttributeValues"] = query.values
        found: list[Task] = []
        read = 0
        while True:
            with _translated_errors():
                response = self._client.query(**request)
            found += [task_from_item(item) for item in response["Items"]]
            read += response["ScannedCount"]
            if len(found) > limit:
                page = found[:limit]
                return TaskPage(page, position(page[-1]))
            last = response.get("LastEvaluatedKey")
            if last is None:
                return TaskPage(found, None)
            if read >= _FILTERED_READ_BUDGET:
                # Everything up to the last item read was looked at: the next call goes on from there.
                return TaskPage(found, last[sort_key]["S"])
            request["ExclusiveStartKey"] = last

    def pending_by_priority(self) -> dict[int, int]:
        """Pattern 9c: the PENDING partition's sort keys only; the priority is their prefix."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": "ByStatus",
            "KeyConditionExpression": "GSI2PK = :pending",
            "ExpressionAttributeValues": {":pending": {"S": TaskStatus.PENDING.value}},
            "ProjectionExpression": "GSI2SK",
        }
        counts: dict[int, int] = {}
        while True:
            with _translated_errors():
                response = self._client.query(**request)
            for item in response["Items"]:
                priority = 10 - int(item["GSI2SK"]["S"][:2])
                counts[priority] = counts.get(priority, 0) + 1
            if "LastEvaluatedKey" not in response:
                return counts
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def pending_tasks(self, limit: int, *, priority: int | None = None) -> list[Task]:
        """Pattern 7: ascending GSI2SK is highest priority first, then oldest queued_at."""
        prefix = None if priority is None else pending_prefix(priority)
        return self._query_tasks(limit, "ByStatus", "GSI2PK", TaskStatus.PENDING.value, sort_prefix=prefix)

    def count_pending(self) -> int:
        """Pattern 7, counted (Select COUNT: the items are read, not returned)."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": "ByStatus",
            "KeyConditionExpression": "GSI2PK = :pending",
            "ExpressionAttributeValues": {":pending": {"S": TaskStatus.PENDING.value}},
            "Select": "COUNT",
        }
        count = 0
        while True:
            with _translated_errors():
                response = self._client.query(**request)
            count += response["Count"]
            if "LastEvaluatedKey" not in response:
                return count
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def processing_due(self, before: int, limit: int) -> list[Task]:
        """Pattern 8."""
        return self._query_tasks(
            limit,
            "ByStatus",
            "GSI2PK",
            TaskStatus.PROCESSING.value,
            sort_at_most=f"{before:013d}#{HIGHEST}",
        )

    def processing_on_server(self, server_id: str, limit: int = 1000) -> list[Task]:
        """Pattern 9."""
        return self._query_tasks(limit, "ByServer", "GSI3PK", f"SERVER#{server_id}")

    def _query_tasks(
        self,
        limit: int,
        index: str,
        partition_key: str,
        partition: str,
        *,
        sort_prefix: str | None = None,
        sort_at_most: str | None = None,
        newest_first: bool = False,
    ) -> list[Task]:
        query = Expression()
        query.condition(f"{query.name(partition_key)} = {query.value(partition)}")
        sort_key = partition_key.replace("PK", "SK")
        if sort_prefix is not None:
            query.condition(f"begins_with({query.name(sort_key)}, {query.value(sort_prefix)})")
        if sort_at_most is not None:
            query.condition(f"{query.name(sort_key)} <= {query.value(sort_at_most)}")
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": query.key_condition(),
            "ExpressionAttributeNames": query.names,
            "ExpressionAttributeValues": query.values,
            "ScanIndexForward": not newest_first,
        }
        return [task_from_item(item) for item in self._query(request, limit)]

    # -- streamed output (core.aws.dynamodb_output: patterns 30-31) ------------------------

    def append_output(self, task: Task, chunk: OutputChunk, size: int) -> Task:
        return dynamodb_output.append(self, task, chunk, size)

    def task_output(self, task_id: str, *, after: int = -1, limit: int = 100) -> list[OutputChunk]:
        return dynamodb_output.after(self, task_id, after, limit)

    # -- servers -------------------------------------------------------------------------

    def put_server(self, server: Server) -> None:
        """Pattern 10."""
        self._put_new(server_to_item(server))

    def get_server(self, server_id: str) -> Server | None:
        """Pattern 11."""
        item = self._get(server_key(server_id))
        return None if item is None else server_from_item(item)

    def list_servers(self) -> list[Server]:
        """Pattern 12."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :servers",
            "ExpressionAttributeValues": {":servers": {"S": "SERVERS"}},
            "ConsistentRead": True,
        }
        return [server_from_item(item) for item in self._query(request)]

    def update_server(self, server_id: str, changes: Mapping[str, Any], *, version: int) -> Server:
        """Pattern 11: optimistic lock on `version`."""
        check_fields(Server, changes)
        if {"active_tasks", "version", "id"} & changes.keys():
            raise ValueError("update_server never changes id, active_tasks or version")
        update = Expression()
        for name, value in field_values(changes).items():
            update.assign(name, value)
        version_name = update.name("version")
        update.set(f"{version_name} = {version_name} + {update.value(1)}")
        update.equals("version", version)
        return self._update_or_stale(server_key(server_id), update, server_from_item)

    def delete_server(self, server_id: str) -> Server | None:
        """Pattern 11."""
        with _translated_errors():
            response = self._client.delete_item(
                TableName=self.table_name, Key=server_key(server_id), ReturnValues="ALL_OLD"
            )
        old = response.get("Attributes")
        return None if old is None else server_from_item(old)

    def set_active_tasks(
        self, server_id: str, value: int, *, expected: int, last_claim_at: int | EllipsisType | None = ...
    ) -> bool:
        """Pattern 13."""
        update = Expression()
        update.assign("active_tasks", value)
        update.equals("active_tasks", expected)
        if last_claim_at is not ...:
            update.equals("last_claim_at", last_claim_at)
        with _translated_errors():
            try:
                self._client.update_item(
                    TableName=self.table_name, Key=server_key(server_id), **update.request()
                )
            except ClientError as error:
                if _code(error) != _CONDITION_FAILED:
                    raise
                return False
        return True

    # -- settings, counters, rate windows, idempotency -----------------------------------

    def get_setting(self, name: str) -> Any | None:
        """Pattern 14."""
        item = self._get(setting_key(name))
        return None if item is None else msgspec.json.decode(item["value"]["S"])

    def put_setting(self, name: str, value: Any) -> None:
        """Pattern 14."""
        item = setting_key(name)
        item["value"] = {"S": msgspec.json.encode(value).decode()}
        with _translated_errors():
            self._client.put_item(TableName=self.table_name, Item=item)

    def next_in_sequence(self, name: str) -> int:
        """Pattern 15."""
        update = Expression()
        update.add("n", 1)
        return self._add(sequence_key(name), update, "n")

    def add_counters(self, key: str, increments: Mapping[str, int], *, expires_at: int) -> None:
        """Pattern 16."""
        if not increments:
            return
        if {"PK", "SK", TTL} & increments.keys():
            raise ValueError(f"counter names clash with key attributes: {sorted(increments)}")
        update = Expression()
        for name, amount in increments.items():
            update.add(name, amount)
        update.assign(TTL, expires_at)
        with _translated_errors():
            self._client.update_item(TableName=self.table_name, Key=counter_key(key), **update.request())

    def add_counters_once(
        self, batch_id: str, increments: Mapping[str, Mapping[str, int]], *, expires_at: int, now_s: int
    ) -> bool:
        """Pattern 19: one transaction per 99 keys, each with a marker item that exists only
        if that part was added (TransactWriteItems' own ClientRequestToken forgets after ten
        minutes, and moto does not implement it)."""
        keys = [key for key, counts in increments.items() if counts]
        if not keys:
            return True
        added = False
        for part, start in enumerate(range(0, len(keys), _COUNTER_BATCH_KEYS)):
            marker = Expression()
            marker.assign(TTL, now_s + _COUNTER_BATCH_TTL_S)
            # TTL deletes lazily: an expired marker counts as gone.
            marker.condition(f"attribute_not_exists(PK) OR {marker.name(TTL)} <= {marker.value(now_s)}")
            writes = [self._update(counter_batch_key(f"{batch_id}#{part}"), marker)]
            for key in keys[start : start + _COUNTER_BATCH_KEYS]:
                if {"PK", "SK", TTL} & increments[key].keys():
                    raise ValueError(f"counter names clash with key attributes: {sorted(increments[key])}")
                update = Expression()
                for name, amount in increments[key].items():
                    update.add(name, amount)
                update.assign(TTL, expires_at)
                writes.append(self._update(counter_key(key), update))
            marker_reason, *_ = self._transact(*writes)
            added = added or marker_reason is None
        return added

    def get_counters(self, keys: Collection[str]) -> dict[str, dict[str, int]]:
        """Pattern 16: BatchGetItem, 100 keys a request."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, dict[str, int]] = {}
        for start in range(0, len(unique), _BATCH_GET_LIMIT):
            chunk = [counter_key(k) for k in unique[start : start + _BATCH_GET_LIMIT]]
            for item in self._batch_get(chunk):
                found[counters_name(item)] = {
                    name: int(value["N"]) for name, value in item.items() if name not in ("PK", "SK", TTL)
                }
        return found

    def hit_rate_window(self, key: str, *, expires_at: int) -> int:
        """Pattern 17."""
        update = Expression()
        update.add("hits", 1)
        update.assign(TTL, expires_at)
        return self._add(rate_key(key), update, "hits")

    def put_idempotency(self, record: IdempotencyRecord, *, now_s: int) -> IdempotencyRecord | None:
        """Pattern 18. TTL deletes late (up to days), so an expired record may still be there:
        the condition treats it as absent."""
        item = idempotency_key(record.key)
        item |= {
            "body_hash": {"S": record.body_hash},
            "task_id": {"S": record.task_id},
            TTL: {"N": str(record.expires_at)},
        }
        for _ in range(3):
            with _translated_errors():
                try:
                    self._client.put_item(
                        TableName=self.table_name,
                        Item=item,
                        ConditionExpression="attribute_not_exists(PK) OR #expires <= :now",
                        ExpressionAttributeNames={"#expires": TTL},
                        ExpressionAttributeValues={":now": {"N": str(now_s)}},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                    return None
                except ClientError as error:
                    if _code(error) != _CONDITION_FAILED:
                        raise
                    old = _old_item(error) or self._get(idempotency_key(record.key))
            if old is not None:  # else it expired and went between the two requests
                return IdempotencyRecord(
                    key=record.key,
                    body_hash=old["body_hash"]["S"],
                    task_id=old["task_id"]["S"],
                    expires_at=int(old[TTL]["N"]),
                )
        raise UnavailableError(BUSY)

    # -- webhook deliveries --------------------------------------------------------------

    def put_delivery(self, delivery: WebhookDelivery) -> None:
        """Pattern 26."""
        self._put_new(delivery_to_item(delivery))

    def deliveries_of_task(self, task_id: str) -> list[WebhookDelivery]:
        """Pattern 27."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk",
            "ExpressionAttributeValues": {":pk": delivery_key(task_id, 0)["PK"]},
            "ConsistentRead": True,
        }
        return [delivery_from_item(item) for item in self._query(request)]

    def due_deliveries(self, now: int, limit: int) -> list[WebhookDelivery]:
        """Pattern 28."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": "ByStatus",
            "KeyConditionExpression": "GSI2PK = :due AND GSI2SK <= :now",
            "ExpressionAttributeValues": {
                ":due": {"S": DELIVERIES_DUE},
                ":now": {"S": f"{now:013d}#{HIGHEST}"},
            },
        }
        return [delivery_from_item(item) for item in self._query(request, limit)]

    def update_delivery(
        self, delivery: WebhookDelivery, changes: Mapping[str, Any], *, due_by: int | None = None
    ) -> WebhookDelivery:
        """Pattern 29."""
        check_fields(WebhookDelivery, changes)
        if {"task_id", "round"} & changes.keys():
            raise ValueError("a delivery's task and round never change")
        written = msgspec.structs.replace(delivery, **changes)
        update = Expression()
        for name, value in field_values(changes).items():
            update.assign(name, value)
        for attribute, derived in delivery_index_attributes(msgspec.structs.asdict(written)).items():
            update.assign(attribute, None if derived is None else to_value(derived))
        update.equals("state", DeliveryState.PENDING.value)
        update.equals("attempts", delivery.attempts)
        if due_by is not None:
            update.condition(f"{update.name('next_attempt_at')} <= {update.value(due_by)}")
        return self._update_or_stale(
            delivery_key(delivery.task_id, delivery.round), update, delivery_from_item
        )

    # -- requests ------------------------------------------------------------------------

    def _get(self, key: Item) -> Item | None:
        with _translated_errors():
            response = self._client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True)
        return response.get("Item")

    def _put_new(self, item: Item) -> None:
        with _translated_errors():
            try:
                self._client.put_item(
                    TableName=self.table_name,
                    Item=item,
                    ConditionExpression="attribute_not_exists(PK)",
                )
            except ClientError as error:
                if _code(error) != _CONDITION_FAILED:
                    raise
                raise StaleWriteError(None) from None

    def _update_or_stale(self, key: Item, update: Expression, parse: Callable[[Item], T]) -> T:
        """Run a conditional update; return the item as written, or raise StaleWriteError
        with the item as it is (None if there is none)."""
        with _translated_errors():
            try:
                response = self._client.update_item(
                    TableName=self.table_name,
                    Key=key,
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    **update.request(),
                )
            except ClientError as error:
                if _code(error) != _CONDITION_FAILED:
                    raise
                old = _old_item(error)
                raise StaleWriteError(None if old is None else parse(old)) from None
        return parse(response["Attributes"])

    def _add(self, key: Item, update: Expression, attribute: str) -> int:
        """Run an update that ADDs to `attribute`; return its new value."""
        with _translated_errors():
            response = self._client.update_item(
                TableName=self.table_name, Key=key, ReturnValues="UPDATED_NEW", **update.request()
            )
        return int(response["Attributes"][attribute]["N"])

    def _query(self, request: QueryInputTypeDef, limit: int | None = None) -> list[Item]:
        items: list[Item] = []
        while limit is None or len(items) < limit:
            if limit is not None:
                request["Limit"] = limit - len(items)
            with _translated_errors():
                response = self._client.query(**request)
            items.extend(response["Items"])
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return items

    def _batch_get(self, keys: list[Item]) -> list[Item]:
        items: list[Item] = []
        pending: list[Item] = keys
        for attempt in range(8):
            with _translated_errors():
                response = self._client.batch_get_item(RequestItems={self.table_name: {"Keys": pending}})
            items.extend(response["Responses"].get(self.table_name, []))
            unprocessed = response.get("UnprocessedKeys", {}).get(self.table_name)
            if not unprocessed:
                return items
            pending = list(unprocessed["Keys"])
            time.sleep(random.uniform(0, _CONFLICT_BACKOFF_S * 2**attempt))
        raise UnavailableError(BUSY)

    def _update(self, key: Item, update: Expression, *, return_old: bool = False) -> dict[str, Any]:
        """One Update of a TransactWriteItems request."""
        request: dict[str, Any] = {"TableName": self.table_name, "Key": key, **update.request()}
        if return_old:
            request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Update": request}

    def _put(self, item: Item) -> dict[str, Any]:
        """One unconditional Put of a TransactWriteItems request."""
        return {"Put": {"TableName": self.table_name, "Item": item}}

    def _transact(self, *writes: dict[str, Any]) -> list[Mapping[str, Any] | None]:
        """Run the writes as one transaction. Returns, per write, None if the whole
        transaction committed or that write's condition held, else its cancellation reason.
        Retries a conflict with a concurrent transaction a few times, with jitter."""
        items = cast("list[TransactWriteItemTypeDef]", list(writes))
        for attempt in range(_CONFLICT_RETRIES):
            with _translated_errors():
                try:
                    self._client.transact_write_items(TransactItems=items)
                    return [None] * len(writes)
                except ClientError as error:
                    if _code(error) != "TransactionCanceledException":
                        raise
                    reasons: list[Mapping[str, Any]] = list(error.response.get("CancellationReasons", []))
                    codes = {reason.get("Code", "None") for reason in reasons}
                    if codes & _BUSY_CODES:
                        raise UnavailableError(BUSY) from error
                    if "ConditionalCheckFailed" in codes:
                        return [r if r.get("Code") == "ConditionalCheckFailed" else None for r in reasons]
                    if "TransactionConflict" not in codes:
                        raise
            time.sleep(random.uniform(0, _CONFLICT_BACKOFF_S * 2**attempt))
        raise UnavailableError(BUSY)

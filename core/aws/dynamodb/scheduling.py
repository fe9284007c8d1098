"""The scheduling index (core/domain/scheduling.py, docs/SCHEDULING.md): patterns 7a and 33-35
of the access-pattern table (see the package).

| Item        | PK         | SK                                   | Attributes                      |
|-------------|------------|--------------------------------------|---------------------------------|
| Owner queue | SCHEDULING | QUEUE#<10-priority:2>#<caps>#<owner> | pending, queue, priority, owner |
| In flight   | SCHEDULING | INFLIGHT#<owner>                     | processing, owner, changed_at   |

Each count is changed by an ADD in the same transaction as the task write that moves a task
into or out of PENDING (owner queue: patterns 1, 3, 4, 5) or PROCESSING (in flight: patterns
4, 5), so it is exact; the claim's ADD carries the MAX_IN_FLIGHT_PER_OWNER condition. One Query
of the SCHEDULING partition reads every owner queue (or every owner's count): its size follows
queues x priorities x owners, never the backlog. Each owner queue's FIFO is the sparse ByQueue
index (GSI5PK `QUEUE#<caps>#<10-priority:2>#<owner>`, GSI5SK `<ready_at:13>#<id>`).

The counts share one partition: about 1,000 writes/s, three per task (create, claim,
release), so about 300 tasks/s through the scheduler, the deployment's ceiling (servers and
round-robin counters have partitions of their own). Spreading it over N partitions would make
every scheduler round N Queries instead of one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb._requests import CONDITION_FAILED, DynamoTable, code, translated_errors
from core.aws.dynamodb.items import has_outcome_item
from core.aws.dynamodb.keys import (
    HIGHEST,
    IN_FLIGHT_PREFIX,
    OWNER_QUEUE_PREFIX,
    SCHEDULING,
    in_flight_key,
    owner_queue_key,
    owner_queue_partition,
    pending_prefix,
    task_key,
)
from core.domain.models import Task, TaskStatus
from core.domain.scheduling import OwnerQueue, fifo_position, queue_capabilities, queue_key
from core.ports.storage import SchedulingStore, TaskStore, capability_set

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef

    from core.aws.dynamodb.items import Item


def pending_change(table: str, task: Task, delta: int) -> dict[str, Any]:
    """A transaction's Update (pattern 33): `delta` tasks enter (+) or leave (-) the task's
    owner queue."""
    queue = queue_key(task.capabilities)
    change = Expression()
    change.add("pending", delta)
    change.assign("queue", queue)
    change.assign("priority", task.priority)
    change.assign("owner", task.owner)
    return {
        "Update": {
            "TableName": table,
            "Key": owner_queue_key(queue, task.priority, task.owner),
            **change.request(),
        }
    }


def in_flight_change(
    table: str, owner: str, delta: int, *, limit: int = 0, changed_at: int | None = None
) -> dict[str, Any]:
    """A transaction's Update (pattern 34): the owner has `delta` more tasks in flight; with
    `limit`, only if it had fewer than `limit` (else the transaction is cancelled)."""
    change = Expression()
    change.add("processing", delta)
    change.assign("owner", owner)
    if changed_at is not None:
        change.assign("changed_at", changed_at)
    if limit > 0:
        processing = change.name("processing")
        change.condition(f"attribute_not_exists({processing}) OR {processing} < {change.value(limit)}")
    return {"Update": {"TableName": table, "Key": in_flight_key(owner), **change.request()}}


class DynamoSchedulingStore(DynamoTable, TaskStore, SchedulingStore):
    def owner_queues(self) -> list[OwnerQueue]:
        """Pattern 33: the SCHEDULING partition's owner queues, one Query."""
        found = [
            OwnerQueue(
                queue=item["queue"]["S"],
                priority=int(item["priority"]["N"]),
                owner=item["owner"]["S"],
                pending=int(item["pending"]["N"]),
            )
            for item in self._scheduling(OWNER_QUEUE_PREFIX)
        ]
        return [q for q in found if q.pending > 0]

    def in_flight_by_owner(self) -> dict[str, int]:
        """Pattern 34: the SCHEDULING partition's in-flight counts, one Query."""
        counts = {
            item["owner"]["S"]: int(item["processing"]["N"]) for item in self._scheduling(IN_FLIGHT_PREFIX)
        }
        return {owner: n for owner, n in counts.items() if n != 0}

    def set_in_flight(self, owner: str, value: int, *, expected: int, quiet_since: int) -> bool:
        """Pattern 34, reconciled: if the count is `expected` and unchanged since `quiet_since`."""
        update = Expression()
        update.assign("processing", value)
        update.assign("owner", owner)
        processing, changed = update.name("processing"), update.name("changed_at")
        absent = f"attribute_not_exists({processing}) OR " if expected == 0 else ""
        update.condition(f"{absent}{processing} = {update.value(expected)}")
        update.condition(f"attribute_not_exists({changed}) OR {changed} <= {update.value(quiet_since)}")
        with translated_errors():
            try:
                self._client.update_item(
                    TableName=self.table_name, Key=in_flight_key(owner), **update.request()
                )
            except ClientError as error:
                if code(error) != CONDITION_FAILED:
                    raise
                return False
        return True

    def _scheduling(self, prefix: str) -> list[Item]:
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": SCHEDULING}, ":prefix": {"S": prefix}},
            "ConsistentRead": True,
        }
        return self._query(request)

    def queue_tasks(
        self, owner_queue: OwnerQueue, limit: int, *, after: tuple[int, str] | None = None
    ) -> list[Task]:
        """Pattern 35: an owner queue's FIFO from the ByQueue index, which projects keys only
        (its sort key ends with the task id), then those tasks from the table in one
        consistent BatchGetItem (pattern 2b): the index stays a few bytes per PENDING task, and
        the scheduler reads whole, current tasks only for the few it looks at (1, then 16)."""
        partition = owner_queue_partition(owner_queue.queue, owner_queue.priority, owner_queue.owner)
        query = Expression()
        query.condition(f"{query.name('GSI5PK')} = {query.value(partition)}")
        if after is not None:
            query.condition(f"{query.name('GSI5SK')} > {query.value(f'{after[0]:013d}#{after[1]}')}")
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": "ByQueue",
            "KeyConditionExpression": query.key_condition(),
            "ExpressionAttributeNames": query.names,
            "ExpressionAttributeValues": query.values,
        }
        ids = [item["GSI5SK"]["S"].partition("#")[2] for item in self._query(request, limit)]
        if not ids:
            return []
        found = {
            item["id"]["S"]: item for item in self._batch_get([task_key(i) for i in ids], consistent=True)
        }
        tasks: list[Task] = []
        for task_id in ids:  # in the index's order; a task deleted meanwhile is left out
            item = found.get(task_id)
            if item is None:
                continue
            if has_outcome_item(item):  # an earlier attempt's large error, in an OUTCOME item
                task = self.get_task(task_id)
                if task is not None:
                    tasks.append(task)
                continue
            tasks.append(self._task_from(item))
        return tasks

    def queue_ahead(self, task: Task) -> int:
        """Pattern 35, counted (Select COUNT): the entries of the task's owner queue before it."""
        ready, task_id = fifo_position(task)
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": "ByQueue",
            "KeyConditionExpression": "GSI5PK = :queue AND GSI5SK < :position",
            "ExpressionAttributeValues": {
                ":queue": {
                    "S": owner_queue_partition(queue_key(task.capabilities), task.priority, task.owner)
                },
                ":position": {"S": f"{ready:013d}#{task_id}"},
            },
            "Select": "COUNT",
        }
        count = 0
        while True:
            with translated_errors():
                response = self._client.query(**request)
            count += response["Count"]
            if "LastEvaluatedKey" not in response:
                return count
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def pending_queued_before(self, cutoff: int, limit: int) -> list[Task]:
        """Pattern 7a: each priority's PENDING range up to `cutoff` (eleven Queries that read
        only the tasks that are due), oldest first."""
        due: list[Task] = []
        for priority in range(10, -1, -1):
            prefix = pending_prefix(priority)
            request: QueryInputTypeDef = {
                "TableName": self.table_name,
                "IndexName": "ByStatus",
                "KeyConditionExpression": "GSI2PK = :pending AND GSI2SK BETWEEN :first AND :last",
                "ExpressionAttributeValues": {
                    ":pending": {"S": TaskStatus.PENDING.value},
                    ":first": {"S": prefix},
                    ":last": {"S": f"{prefix}{cutoff:013d}#{HIGHEST}"},
                },
            }
            due += [self._task_from(item) for item in self._query(request, limit)]
        due.sort(key=lambda t: (t.queued_at, t.id))
        return due[:limit]

    def pending_by_priority(self) -> dict[int, int]:
        """Pattern 9c: the owner queues' counts (pattern 33), summed per priority."""
        counts: dict[int, int] = {}
        for owner_queue in self.owner_queues():
            counts[owner_queue.priority] = counts.get(owner_queue.priority, 0) + owner_queue.pending
        return counts

    def pending_by_need(self) -> dict[tuple[int, tuple[str, ...]], int]:
        """Pattern 9c: the owner queues' counts (pattern 33), summed per priority and capability
        set (a read that follows the owner queues, not the backlog)."""
        counts: dict[tuple[int, tuple[str, ...]], int] = {}
        for owner_queue in self.owner_queues():
            need = (owner_queue.priority, capability_set(queue_capabilities(owner_queue.queue)))
            counts[need] = counts.get(need, 0) + owner_queue.pending
        return counts

    def count_pending(self) -> int:
        """Pattern 9c: the owner queues' counts (pattern 33), summed."""
        return sum(owner_queue.pending for owner_queue in self.owner_queues())

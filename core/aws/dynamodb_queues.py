"""The scheduling index on DynamoDB (core/domain/scheduling.py, docs/SCHEDULING.md): items and
the writes that keep them, for `core.aws.dynamodb.DynamoStore`.

| Item        | PK         | SK                                   | Attributes                 |
|-------------|------------|--------------------------------------|----------------------------|
| Owner queue | SCHEDULING | QUEUE#<10-priority:2>#<caps>#<owner> | pending, queue, priority,  |
|             |            |                                      | owner                      |
| In flight   | SCHEDULING | INFLIGHT#<owner>                     | processing, owner,         |
|             |            |                                      | changed_at                 |

Each is changed by an ADD in the same transaction as the task write that moves a task into or
out of PENDING (owner queue) or PROCESSING (in flight), so the counts are exact; a claim's ADD
on the owner's in-flight item carries the MAX_IN_FLIGHT_PER_OWNER condition. One Query of the
SCHEDULING partition reads every owner queue (or every owner's count): its size follows queues
x priorities x owners, never the backlog. Each owner queue's FIFO is the sparse ByQueue index
(GSI5PK `QUEUE#<caps>#<10-priority:2>#<owner>`, GSI5SK `<ready_at:13>#<id>`).

All of them share one partition, like the servers: about 1,000 writes/s, three per task (create,
claim, release), so about 300 tasks/s through the scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.aws.dynamodb_items import Expression, key
from core.domain.models import Task
from core.domain.scheduling import OwnerQueue, queue_key

if TYPE_CHECKING:
    from core.aws.dynamodb_items import Item

SCHEDULING = "SCHEDULING"
QUEUE_PREFIX = "QUEUE#"
IN_FLIGHT_PREFIX = "INFLIGHT#"


def owner_queue_key(queue: str, priority: int, owner: str) -> Item:
    return key(SCHEDULING, f"{QUEUE_PREFIX}{10 - priority:02d}#{queue}#{owner}")


def in_flight_key(owner: str) -> Item:
    return key(SCHEDULING, f"{IN_FLIGHT_PREFIX}{owner}")


def pending_change(table: str, task: Task, delta: int) -> dict[str, Any]:
    """A transaction's Update: `delta` tasks enter (+) or leave (-) the task's owner queue."""
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
    """A transaction's Update: the owner has `delta` more tasks in flight; with `limit`, only if
    that leaves it at most `limit` (the claim is cancelled otherwise)."""
    change = Expression()
    change.add("processing", delta)
    change.assign("owner", owner)
    if changed_at is not None:
        change.assign("changed_at", changed_at)
    if limit > 0:
        processing = change.name("processing")
        change.condition(f"attribute_not_exists({processing}) OR {processing} < {change.value(limit)}")
    return {"Update": {"TableName": table, "Key": in_flight_key(owner), **change.request()}}


def owner_queue_from_item(item: Item) -> OwnerQueue:
    return OwnerQueue(
        queue=item["queue"]["S"],
        priority=int(item["priority"]["N"]),
        owner=item["owner"]["S"],
        pending=int(item["pending"]["N"]),
    )


def in_flight_from_item(item: Item) -> tuple[str, int]:
    return item["owner"]["S"], int(item["processing"]["N"])

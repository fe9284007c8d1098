"""A task's streamed output in the DynamoDB table: one item per chunk, in the task's partition.

| Item   | PK        | SK               | Other attributes                               |
|--------|-----------|------------------|------------------------------------------------|
| Chunk  | TASK#<id> | CHUNK#<index:08> | data (JSON), attempt, created_at; expiresAt    |

| Access pattern          | Index | Key condition                                | Example          |
|-------------------------|-------|----------------------------------------------|------------------|
| 30 Append a chunk       | table | TASK#<id> / TASK if PROCESSING on <s>,       | TASK#t-1,        |
|                         |       | attempt <a> and output_chunks = <n>, ADD 1;  | CHUNK#00000003   |
|                         |       | + put TASK#<id> / CHUNK#<n>: one transaction |                  |
| 31 Chunks after <i>     | table | PK = TASK#<id> AND SK BETWEEN CHUNK#<i+1>    | TASK#t-1         |
|                         |       | AND CHUNK#~, consistent                      |                  |

`CHUNK#` sorts before `OUTCOME` and `TASK`, so pattern 2 (get a task: `SK >= OUTCOME`) never
reads a chunk. A chunk carries its own TTL (see core.services.output for how it is chosen):
DynamoDB cannot expire a partition at once, and rewriting every chunk when the task finishes
would cost a write per chunk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from core.aws.dynamodb_items import HIGHEST, TTL, Expression, key, task_key, to_value
from core.domain.models import OutputChunk, Task, TaskStatus
from core.errors import StaleWriteError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef

    from core.aws.dynamodb import DynamoStore
    from core.aws.dynamodb_items import Item

CHUNK_PREFIX = "CHUNK#"


def chunk_key(task_id: str, index: int) -> Item:
    return key(f"TASK#{task_id}", f"{CHUNK_PREFIX}{index:08d}")


def chunk_to_item(chunk: OutputChunk) -> Item:
    item = chunk_key(chunk.task_id, chunk.index)
    item["data"] = {"S": msgspec.json.encode(chunk.data).decode()}
    item["attempt"] = to_value(chunk.attempt)
    item["created_at"] = to_value(chunk.created_at)
    item[TTL] = to_value(chunk.expires_at)
    return item


def chunk_from_item(item: Item) -> OutputChunk:
    return OutputChunk(
        task_id=item["PK"]["S"].removeprefix("TASK#"),
        index=int(item["SK"]["S"].removeprefix(CHUNK_PREFIX)),
        data=msgspec.json.decode(item["data"]["S"]),
        attempt=int(item["attempt"]["N"]),
        created_at=int(item["created_at"]["N"]),
        expires_at=int(item[TTL]["N"]),
    )


def append(store: DynamoStore, task: Task, chunk: OutputChunk, size: int) -> Task:
    """Pattern 30."""
    count = Expression()
    chunks = count.name("output_chunks")
    count.add("output_chunks", 1)
    count.add("output_bytes", size)
    count.equals("status", TaskStatus.PROCESSING.value)
    count.equals("attempts", task.attempts)
    count.equals("server_id", task.server_id)
    if task.output_chunks == 0:  # a task stored before output existed has no counter yet
        count.condition(f"attribute_not_exists({chunks}) OR {chunks} = {count.value(0)}")
    else:
        count.equals("output_chunks", task.output_chunks)
    put: dict[str, Any] = {
        "Put": {
            "TableName": store.table_name,
            "Item": chunk_to_item(msgspec.structs.replace(chunk, index=task.output_chunks)),
            "ConditionExpression": "attribute_not_exists(PK)",
        }
    }
    task_reason, chunk_reason = store._transact(store._update(task_key(task.id), count, return_old=True), put)
    if task_reason is not None or chunk_reason is not None:
        raise StaleWriteError(store._current_task(task.id, task_reason or {}))
    return msgspec.structs.replace(
        task, output_chunks=task.output_chunks + 1, output_bytes=task.output_bytes + size
    )


def after(store: DynamoStore, task_id: str, index: int, limit: int) -> list[OutputChunk]:
    """Pattern 31."""
    request: QueryInputTypeDef = {
        "TableName": store.table_name,
        "KeyConditionExpression": "PK = :task AND SK BETWEEN :first AND :last",
        "ExpressionAttributeValues": {
            ":task": task_key(task_id)["PK"],
            ":first": {"S": f"{CHUNK_PREFIX}{index + 1:08d}"},
            ":last": {"S": f"{CHUNK_PREFIX}{HIGHEST}"},
        },
        "ConsistentRead": True,
    }
    return [chunk_from_item(item) for item in store._query(request, limit)]

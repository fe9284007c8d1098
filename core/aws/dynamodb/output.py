"""A task's streamed output in the table: patterns 30-31 of the access-pattern table (see the
package), one CHUNK#<index> item per chunk in the task's partition.

A chunk carries its own TTL (core.services.output chooses it no earlier than the task's): the
table cannot expire a partition at once, and rewriting every chunk's TTL when the task
finishes would cost a write per chunk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb._requests import DynamoTable
from core.aws.dynamodb.items import TTL, task_from_item, to_value
from core.aws.dynamodb.keys import CHUNK_PREFIX, HIGHEST, chunk_key, task_key, task_partition
from core.domain.models import OutputChunk, Task, TaskStatus
from core.errors import StaleWriteError
from core.ports.storage import OutputStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef

    from core.aws.dynamodb.items import Item


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


class DynamoOutputStore(DynamoTable, OutputStore):
    def append_output(self, task: Task, chunk: OutputChunk, size: int) -> Task:
        """Pattern 30: the count on the task (if it is still PROCESSING on that attempt and
        server, with that many chunks) and the chunk item, in one transaction."""
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
                "TableName": self.table_name,
                "Item": chunk_to_item(msgspec.structs.replace(chunk, index=task.output_chunks)),
                "ConditionExpression": "attribute_not_exists(PK)",
            }
        }
        task_reason, chunk_reason = self._transact(
            self._update(task_key(task.id), count, return_old=True), put
        )
        if task_reason is not None or chunk_reason is not None:
            raise StaleWriteError(self._stale_task(task.id, task_reason))
        return msgspec.structs.replace(
            task, output_chunks=task.output_chunks + 1, output_bytes=task.output_bytes + size
        )

    def task_output(self, task_id: str, *, after: int = -1, limit: int = 100) -> list[OutputChunk]:
        """Pattern 31."""
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :task AND SK BETWEEN :first AND :last",
            "ExpressionAttributeValues": {
                ":task": {"S": task_partition(task_id)},
                ":first": {"S": f"{CHUNK_PREFIX}{after + 1:08d}"},
                ":last": {"S": f"{CHUNK_PREFIX}{HIGHEST}"},
            },
            "ConsistentRead": True,
        }
        return [chunk_from_item(item) for item in self._query(request, limit)]

    def _stale_task(self, task_id: str, reason: Any) -> Task | None:
        """The task as the failed condition saw it, else as it is now (None: no such task)."""
        if reason and "Item" in reason:
            return task_from_item(reason["Item"])
        found = self._get(task_key(task_id))
        return None if found is None else task_from_item(found)

"""Tasks in the table, read from the indexes: patterns 6-9b of the access-pattern table (9c and
the PENDING counts are the scheduling index's, in scheduling.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.aws.dynamodb._expressions import Expression
from core.aws.dynamodb._requests import DynamoTable, translated_errors
from core.aws.dynamodb.items import summary_from_item
from core.aws.dynamodb.keys import (
    HIGHEST,
    owner_partition,
    recent_partition,
    server_partition,
)
from core.domain.models import Task, TaskStatus
from core.ports.storage import TaskPage, TaskStore, position

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef


# Pattern 9b reads at most this many of an owner's tasks per call, whatever the filter keeps.
_FILTERED_READ_BUDGET = 1_000
# Their entries are task summaries (template.yaml projects no payload, result or error).
LISTING_INDEXES = frozenset({"ByOwner", "ByRecent"})


class DynamoTaskQueries(DynamoTable, TaskStore):
    def tasks_by_owner(self, owner: str, limit: int = 50) -> list[Task]:
        """Pattern 6."""
        return self._query_tasks(limit, "ByOwner", "GSI1PK", owner_partition(owner), newest_first=True)

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
            return self._newest(limit, "ByOwner", "GSI1PK", owner_partition(owner), before, status)
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
            with translated_errors():
                response = self._client.query(**request)
            found += [summary_from_item(item) for item in response["Items"]]
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
        return self._query_tasks(limit, "ByServer", "GSI3PK", server_partition(server_id))

    def _query_tasks(
        self,
        limit: int,
        index: str,
        partition_key: str,
        partition: str,
        *,
        sort_prefix: str | None = None,
        sort_at_most: str | None = None,
        sort_between: tuple[str, str] | None = None,
        newest_first: bool = False,
    ) -> list[Task]:
        query = Expression()
        query.condition(f"{query.name(partition_key)} = {query.value(partition)}")
        sort_key = partition_key.replace("PK", "SK")
        if sort_prefix is not None:
            query.condition(f"begins_with({query.name(sort_key)}, {query.value(sort_prefix)})")
        if sort_at_most is not None:
            query.condition(f"{query.name(sort_key)} <= {query.value(sort_at_most)}")
        if sort_between is not None:
            low, high = sort_between
            query.condition(f"{query.name(sort_key)} BETWEEN {query.value(low)} AND {query.value(high)}")
        request: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": query.key_condition(),
            "ExpressionAttributeNames": query.names,
            "ExpressionAttributeValues": query.values,
            "ScanIndexForward": not newest_first,
        }
        read = summary_from_item if index in LISTING_INDEXES else self._task_from
        return [read(item) for item in self._query(request, limit)]

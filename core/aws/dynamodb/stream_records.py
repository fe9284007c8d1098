"""The table's stream records (Lambda's DynamoDB stream event, NEW_AND_OLD_IMAGES), read as
task changes, so that no consumer outside this package knows the key layout or the item
format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.aws.dynamodb.items import FOLLOWED, OUTCOME_REF, PAYLOAD_REF, task_from_item
from core.aws.dynamodb.keys import is_chunk_key, is_task_key
from core.aws.dynamodb.output import chunk_from_item
from core.domain.models import OutputChunk, Task, TaskStatus

__all__ = ["TaskChange", "output_chunk", "task_change"]

# What storing an output chunk changes on its task: nothing a follower of the task sees (the
# chunk's own record tells them).
_OUTPUT_COUNTERS = frozenset({"output_chunks", "output_bytes"})


@dataclass(frozen=True)
class TaskChange:
    """A task item written (created or changed), as the stream carries it."""

    task: Task
    # The status before the write; None when the task was created.
    previous_status: TaskStatus | None
    # A large result or error, or a large payload, lives in the payload bucket (or, written
    # by an earlier version, a large outcome in the task's OUTCOME item): `task` lacks it (an
    # empty payload, no result or error), and who needs it reads the task from the store.
    outcome_elsewhere: bool
    # A WebSocket connection subscribed to the task at some point (the notifier looks for
    # subscribers of followed tasks only).
    followed: bool = False
    # The write only counted an output chunk (see `output_chunk` for the chunk itself).
    counts_output_only: bool = False


def task_change(record: Mapping[str, Any]) -> TaskChange | None:
    """The task write `record` carries; None for any other record (a TTL removal, a server,
    counters, a connection, ...). A task item whose image does not decode raises (the
    exception of msgspec or of the item reader)."""
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    change = record.get("dynamodb") or {}
    new = change.get("NewImage")
    if not new or not is_task_key(change.get("Keys") or new):
        return None
    payload_elsewhere = PAYLOAD_REF in new and "payload" not in new
    image = {**new, "payload": {"S": "{}"}} if payload_elsewhere else dict(new)
    old = change.get("OldImage") or {}
    old_status = old.get("status", {}).get("S")
    return TaskChange(
        task=task_from_item(image),
        previous_status=None if old_status is None else TaskStatus(old_status),
        outcome_elsewhere=OUTCOME_REF in new or payload_elsewhere,
        followed=FOLLOWED in new,
        counts_output_only=bool(old) and _same_but_output_counts(old, new),
    )


def output_chunk(record: Mapping[str, Any]) -> OutputChunk | None:
    """The output chunk a record stored; None for any other record."""
    change = record.get("dynamodb") or {}
    new = change.get("NewImage")
    if record.get("eventName") != "INSERT" or not new or not is_chunk_key(change.get("Keys") or new):
        return None
    return chunk_from_item(dict(new))


def _same_but_output_counts(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    names = old.keys() - _OUTPUT_COUNTERS
    return names == new.keys() - _OUTPUT_COUNTERS and all(old[name] == new[name] for name in names)

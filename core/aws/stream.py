"""The table's DynamoDB stream, read as task changes, and the statistics it carries.

In AWS, task statistics are counted from the stream rather than by the request that wrote the
task: a batch of up to 100 changes costs one transaction per 99 counter keys (usually one: the
hour and the servers that finished tasks) instead of a write per counter per task, and no
request waits for a counter. A batch is counted once even when Lambda delivers it again after a
failure (Store.add_counters_once, keyed by the batch's event ids).

Records are Lambda's DynamoDB stream event records (NEW_AND_OLD_IMAGES): `eventID`,
`eventName` (INSERT, MODIFY, REMOVE), `dynamodb.NewImage` / `OldImage` in DynamoDB JSON.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from core.aws.dynamodb import stream_records
from core.domain.models import Task, TaskStatus
from core.services import stats
from core.services.context import Context

log = logging.getLogger(__name__)

Change = tuple[Task, TaskStatus | None]


def task_change(record: Mapping[str, Any]) -> Change | None:
    """The task as written and its status before (None: created); None for anything that is
    not a write of a task item (TTL removals, servers, counters, ...)."""
    try:
        change = stream_records.task_change(record)
    except Exception:
        # One unreadable image must not hold up the shard; it is not counted.
        log.exception("stream record is not a task", extra={"event_id": record.get("eventID")})
        return None
    return None if change is None else (change.task, change.previous_status)


def batch_id(records: Iterable[Mapping[str, Any]]) -> str:
    """The same records, delivered again, have the same id."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(str(record.get("eventID", "")).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def count_statistics(ctx: Context, records: list[Mapping[str, Any]]) -> int:
    """Count the task changes among `records` into the statistics counters, once per batch.
    Returns how many changes were counted (0 if the batch had been)."""
    changes = [change for record in records if (change := task_change(record)) is not None]
    found = stats.merge(stats.increments(task, previous) for task, previous in changes)
    now = ctx.now()
    added = ctx.store.add_counters_once(
        batch_id(records), found, expires_at=stats.expiry_s(now), now_s=now // 1000
    )
    return len(changes) if added else 0

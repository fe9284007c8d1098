"""The notifier: the table's stream in, each task change posted to the WebSocket connections
following that task. The event source's FilterCriteria passes task items only (template.yaml);
a record that fails (the table or API Gateway unavailable) is reported, and so is every record
after it in the batch without being tried, so Lambda retries from there in order: a subscriber
may get a state twice, never an older one after a newer one."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from core.aws import update_push
from core.aws.dynamodb import stream_records
from handlers._lambda import build_context, instrumented, logger

processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
push = update_push.LazyPush(build_context)


class EarlierRecordFailedError(Exception):
    """Not tried: an earlier record of the batch failed, and order matters."""


_failed_at: list[str | None] = []  # the batch's first failed sequence number, if any


def record_handler(record: DynamoDBRecord) -> None:
    if _failed_at:
        raise EarlierRecordFailedError(f"record {_failed_at[0]} failed before this one")
    try:
        _post(record)
    except Exception:
        _failed_at.append(record.dynamodb.sequence_number if record.dynamodb else None)
        raise


def _post(record: DynamoDBRecord) -> None:
    chunk = stream_records.output_chunk(record.raw_event)
    if chunk is not None:  # streamed output: an `output` message
        logger.append_keys(task_id=chunk.task_id)
        push(update_push.endpoint()).notify_output(chunk)
        return
    change = stream_records.task_change(record.raw_event)
    if change is None or change.counts_output_only:  # a TTL removal; not a task; a chunk's count
        return
    logger.append_keys(task_id=change.task.id)
    sent = push(update_push.endpoint()).notify(change)
    if sent:  # most task writes have no subscriber: no line for those
        logger.info("task change posted", extra={"status": change.task.status.value, "subscribers": sent})


def _handle(event: dict[str, Any], lambda_context: LambdaContext) -> PartialItemFailureResponse:
    _failed_at.clear()
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=lambda_context
    )


handler = instrumented(_handle)

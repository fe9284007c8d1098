"""The dispatcher Lambda: SQS messages in, predict calls out, partial batch failures back.

A batch's records are handled at once, each in a thread of its own (the predict calls are
blocking urllib3 calls), and every backend call is bounded by the time the invocation has left
(core.aws.runtime.Budget). Then the batch processor reports them: a message whose handling
raised (the store was unavailable), or that there was no time left to start, is a batch item
failure, so SQS delivers it again and, after maxReceiveCount, to the dead-letter queue.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from core.aws import runtime as lambda_runtime
from core.aws.context import LazyContext
from handlers._lambda import build_context, instrumented, logger

# A batch whose every record failed is reported like any other (each record retried by SQS).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
context = LazyContext(build_context)
# The event source mapping's BatchSize (template.yaml): every record of a batch at once.
records_at_once = ThreadPoolExecutor(max_workers=10, thread_name_prefix="record")
# This invocation's records: message id -> what handling it raised (None: handled).
_outcomes: dict[str, Exception | None] = {}


def handle(
    record: dict[str, Any], budget: lambda_runtime.Budget, drains: lambda_runtime.DrainOnce
) -> Exception | None:
    """One record, in a thread of its own; returns what it raised instead of raising."""
    logger.thread_safe_append_keys(message_id=record["messageId"])
    try:
        body = msgspec.json.decode(record["body"])
        if not isinstance(body, dict):
            raise ValueError("a dispatch message is a JSON object")
        # A drain or a health check names no task: its lines name the tasks they touch themselves.
        logger.thread_safe_append_keys(task_id=body.get("taskId"))
        lambda_runtime.handle_message(context(), body, lambda_runtime.shared_pool(), budget, drains)
        logger.info("message handled", extra={"kind": sorted(body)})
        return None
    except Exception as exc:
        return exc
    finally:
        logger.thread_safe_clear_keys()


def record_handler(record: SQSRecord) -> None:
    """Report a record as it went: raises what its handling raised."""
    error = _outcomes.get(record.message_id)
    if error is not None:
        raise error


def _handle(event: dict[str, Any], lambda_context: LambdaContext) -> PartialItemFailureResponse:
    budget = lambda_runtime.Budget(lambda_context.get_remaining_time_in_millis())
    records: list[dict[str, Any]] = event.get("Records") or []
    drains = lambda_runtime.DrainOnce()  # the batch's task and drain messages share one drain
    _outcomes.clear()
    _outcomes.update(
        zip(
            (r["messageId"] for r in records),
            records_at_once.map(lambda r: handle(r, budget, drains), records),
            strict=True,
        )
    )
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=lambda_context
    )


handler = instrumented(_handle)

"""The dispatcher Lambda: SQS messages in, predict calls out, partial batch failures back.

A message whose handling raises (the store was unavailable) is reported as a batch item
failure, so SQS delivers it again and, after maxReceiveCount, to the dead-letter queue.
"""

from __future__ import annotations

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


def record_handler(record: SQSRecord) -> None:
    body = msgspec.json.decode(record.body)
    if not isinstance(body, dict):
        raise ValueError("a dispatch message is a JSON object")
    # A drain or a health check names no task: its lines name the tasks they touch themselves.
    logger.append_keys(task_id=body.get("taskId"), message_id=record.message_id)
    lambda_runtime.handle_message(context(), body, lambda_runtime.shared_pool())
    logger.info("message handled", extra={"kind": sorted(body)})


def _handle(event: dict[str, Any], lambda_context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=lambda_context
    )


handler = instrumented(_handle)

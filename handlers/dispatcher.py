"""The dispatcher Lambda: SQS messages in, predict calls out, partial batch failures back.

A batch's records are handled at once, each in a thread of its own (the predict calls are
blocking urllib3 calls), and every backend call is bounded by the time the invocation has left
(core.aws.runtime.Budget). A message whose handling raises (the store was unavailable), or
that there was no time left to start, is reported as a batch item failure, so SQS delivers it
again and, after maxReceiveCount, to the dead-letter queue.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from core.aws import runtime as lambda_runtime
from core.aws.context import LazyContext
from handlers._lambda import build_context, instrumented, logger

# A batch whose every record failed is reported like any other (each record retried by SQS).
processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
context = LazyContext(build_context)
# The event source mapping's BatchSize (template.yaml): every record of a batch at once.
records_at_once = ThreadPoolExecutor(max_workers=10, thread_name_prefix="record")


def handle(body_text: str, message_id: str, budget: lambda_runtime.Budget) -> None:
    body = msgspec.json.decode(body_text)
    if not isinstance(body, dict):
        raise ValueError("a dispatch message is a JSON object")
    # A drain or a health check names no task: its lines name the tasks they touch themselves.
    logger.thread_safe_append_keys(task_id=body.get("taskId"), message_id=message_id)
    try:
        lambda_runtime.handle_message(context(), body, lambda_runtime.shared_pool(), budget)
        logger.info("message handled", extra={"kind": sorted(body)})
    finally:
        logger.thread_safe_clear_keys()


async def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    # Read per record, when it starts: all of a batch's records start together.
    budget = lambda_runtime.Budget(lambda_context.get_remaining_time_in_millis())
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(records_at_once, handle, record.body, record.message_id, budget)


def _handle(event: dict[str, Any], lambda_context: LambdaContext) -> PartialItemFailureResponse:
    return async_process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=lambda_context
    )


handler = instrumented(_handle)

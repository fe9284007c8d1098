"""The sweeper Lambda, run by an EventBridge schedule: WebSocket connections whose token
expired, timeouts, silent servers, slot counts, health checks, and a drain for PENDING tasks
whose message was lost."""

from __future__ import annotations

import dataclasses
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from core.aws import runtime as lambda_runtime
from core.aws import update_push
from handlers._lambda import build_context, instrumented, logger

push = update_push.LazyPush(build_context)
context = push.context


def _handle(event: dict[str, Any], lambda_context: LambdaContext) -> dict[str, Any]:
    budget = lambda_runtime.Budget(lambda_context.get_remaining_time_in_millis())
    endpoint = update_push.configured_endpoint()
    # A stack without the WebSocket API (taskgate dev --aws) has no connections to close.
    connections = push(endpoint) if endpoint else None
    report = dataclasses.asdict(
        lambda_runtime.sweep(context(), lambda_runtime.shared_pool(), budget, connections)
    )
    logger.info("sweep done", extra={"sweep": report})
    return report


handler = instrumented(_handle)

"""The AWS deployment's Context: DynamoDB and SQS, built once per Lambda container.

Configuration comes from the function's environment (see template.yaml):
TABLE_NAME, QUEUE_URL, and JWT_SECRET or JWT_SECRET_PARAMETER (an SSM SecureString name);
optionally WEBHOOK_SECRET or WEBHOOK_SECRET_PARAMETER.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.config import Config
from core.domain.models import Task, TaskStatus
from core.ports.telemetry import Telemetry
from core.services.context import Context

if TYPE_CHECKING:
    from core.aws.payloads import PayloadBucket

SECRET_CACHE_S = 300
_ssm: Any = None


def ssm_provider() -> Any:
    """One Powertools SSM provider per container, on the default boto3 session the other
    clients use (Powertools' own default provider builds a session of its own: ~100 ms of a
    cold start)."""
    global _ssm
    if _ssm is None:
        import boto3
        from aws_lambda_powertools.utilities.parameters import SSMProvider

        _ssm = SSMProvider(boto3_client=boto3.client("ssm"))
    return _ssm


def jwt_secret_from_env() -> str:
    """JWT_SECRET, else the SSM SecureString named by JWT_SECRET_PARAMETER. Read on every use:
    the provider caches it for SECRET_CACHE_S, so a rotated secret is picked up by warm
    containers within five minutes."""
    secret = os.environ.get("JWT_SECRET", "")
    parameter = os.environ.get("JWT_SECRET_PARAMETER", "")
    if not secret and parameter:
        value = ssm_provider().get(parameter, decrypt=True, max_age=SECRET_CACHE_S)
        secret = value if isinstance(value, str) else ""
    if not secret:
        raise RuntimeError("Set JWT_SECRET or JWT_SECRET_PARAMETER")
    return secret


def webhook_secret_from_env() -> str:
    """WEBHOOK_SECRET, else the SSM SecureString named by WEBHOOK_SECRET_PARAMETER (cached like
    the JWT secret), else "" (the Context then derives one from the JWT secret)."""
    secret = os.environ.get("WEBHOOK_SECRET", "")
    parameter = os.environ.get("WEBHOOK_SECRET_PARAMETER", "")
    if not secret and parameter:
        value = ssm_provider().get(parameter, decrypt=True, max_age=SECRET_CACHE_S)
        secret = value if isinstance(value, str) else ""
    return secret


def payload_bucket_from_env() -> PayloadBucket | None:
    """The bucket for large payloads (PAYLOAD_BUCKET); None keeps every payload in its item."""
    from core.aws.payloads import PayloadBucket

    name = os.environ.get("PAYLOAD_BUCKET", "")
    return PayloadBucket(name) if name else None


def build_context(telemetry: Telemetry | None = None) -> Context:
    from core.aws.dynamodb import DynamoStore
    from core.aws.sqs import SqsQueue
    from core.services.webhook_delivery import WebhookWaker

    # The secret is read when first needed (the statistics function never needs it).
    config = Config.from_env()
    ctx = Context(
        store=DynamoStore(os.environ["TABLE_NAME"], payloads=payload_bucket_from_env()),
        queue=SqsQueue(os.environ["QUEUE_URL"]),
        config=config,
        secret_source=jwt_secret_from_env,
        webhook_secret_source=webhook_secret_from_env,
        telemetry=telemetry or Telemetry(),
    )
    # Statistics are counted from the table's stream (core/aws/stream.py), not by each request.
    ctx.events.listeners.append(WebhookWaker(ctx))
    ctx.events.listeners.append(CancelNotifier(ctx))
    return ctx


class CancelNotifier:
    """Tells a backend (best effort, `endpoints.cancel`) that its PROCESSING task was
    cancelled; on one machine the runtime does this without blocking the request."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __call__(self, task: Task, previous: TaskStatus | None) -> None:
        if task.status is not TaskStatus.CANCELLED or previous is not TaskStatus.PROCESSING:
            return
        server = self.ctx.fleet.get(task.server_id) if task.server_id else None
        if server is not None and server.endpoints.cancel:
            from core.aws import runtime as lambda_runtime
            from core.http import blocking as backend_http

            backend_http.cancel_sync(lambda_runtime.shared_pool(), task, server)


class LazyContext:
    """The Context of a non-HTTP Lambda (dispatcher, sweeper): built on the first invocation
    and kept for the container's life (the HTTP apps do the same through their app state)."""

    def __init__(self, build: Callable[[], Context] = build_context) -> None:
        self._build = build
        self._context: Context | None = None

    def __call__(self) -> Context:
        if self._context is None:
            self._context = self._build()
        return self._context

    def reset(self) -> None:
        """Forget it (tests: each has its own emulated account)."""
        self._context = None

"""SQS adapter of the task queue: a message per task id; the dispatcher Lambda consumes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from core.queue import TaskQueue

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

MAX_DELAY_S = 900  # SQS's limit; longer waits are the sweeper's job


class SqsQueue(TaskQueue):
    def __init__(self, queue_url: str, client: SQSClient | None = None) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "sqs",
                config=Config(
                    connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
                ),
            )
        self.queue_url = queue_url
        self.client = client

    def enqueue(self, task_id: str, *, delay_ms: int = 0) -> None:
        kwargs: dict[str, Any] = {}
        if delay_ms > 0:
            kwargs["DelaySeconds"] = min(MAX_DELAY_S, -(-delay_ms // 1000))
        self.client.send_message(
            QueueUrl=self.queue_url, MessageBody=msgspec.json.encode({"taskId": task_id}).decode(), **kwargs
        )

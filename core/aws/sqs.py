"""SQS adapter of the task queue; the dispatcher Lambda consumes it (see core.aws.runtime
for the messages)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import msgspec

from core.domain.models import Task
from core.ports.queue import TaskQueue

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

MAX_DELAY_S = 900  # SQS's limit; longer waits are the sweeper's job
DRAIN_COALESCE_S = 1.0
SNAPSHOT_LIMIT = 60 * 1024


class SqsQueue(TaskQueue):
    def __init__(self, queue_url: str, client: SQSClient | None = None) -> None:
        self.queue_url = queue_url
        self._client = client
        self._making_client = threading.Lock()
        self._last_drain = float("-inf")
        self._delayed_until = float("-inf")

    @property
    def client(self) -> SQSClient:
        """Made on the first send: a container that only reads (GET, statistics, the stream
        consumers) never pays for it at its cold start (~50 ms)."""
        # A drain settles on several threads, and boto3's default session is not safe to make
        # clients from in several threads at once.
        with self._making_client:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.client(
                    "sqs",
                    config=Config(
                        connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
                    ),
                )
            return self._client

    def enqueue(self, task_id: str, *, delay_ms: int = 0, snapshot: Task | None = None) -> None:
        body: dict[str, Any] = {"taskId": task_id}
        if snapshot is not None:
            encoded = msgspec.json.encode(snapshot)
            # Within one 64 KB billing chunk, or the dispatcher reads the task itself.
            if len(encoded) <= SNAPSHOT_LIMIT:
                body["task"] = msgspec.Raw(encoded)
        self._send(body, delay_ms)

    def capacity_changed(self) -> None:
        """Ask for a drain. A burst of completions needs one drain, not one each: within a
        second of the last request, one more is sent, delayed to the end of that second, and
        later ones in the window ride on it."""
        now = time.monotonic()
        if now - self._last_drain >= DRAIN_COALESCE_S:
            self._last_drain = now
            self._hint({"drain": True})
        elif self._delayed_until <= now:
            self._delayed_until = self._last_drain + DRAIN_COALESCE_S
            self._hint({"drain": True}, delay_ms=int(DRAIN_COALESCE_S * 1000))

    def check_server(self, server_id: str) -> None:
        self._hint({"checkServer": server_id})

    def webhook_due(self, task_id: str, round_: int, *, delay_ms: int = 0) -> None:
        """Past SQS's 15 minute delay limit the message comes early: the dispatcher sends it
        on again, and the sweeper finds the delivery when it is due in any case."""
        self._hint({"webhook": {"taskId": task_id, "round": round_}}, delay_ms)

    def _hint(self, body: dict[str, Any], delay_ms: int = 0) -> None:
        # Hints only: if one is lost, the next sweep drains and checks what is due.
        try:
            self._send(body, delay_ms)
        except Exception:
            log.exception("could not send %s; the sweeper will catch up", sorted(body))

    def _send(self, body: dict[str, Any], delay_ms: int) -> None:
        kwargs: dict[str, Any] = {}
        if delay_ms > 0:
            kwargs["DelaySeconds"] = min(MAX_DELAY_S, -(-delay_ms // 1000))
        self.client.send_message(
            QueueUrl=self.queue_url, MessageBody=msgspec.json.encode(body).decode(), **kwargs
        )

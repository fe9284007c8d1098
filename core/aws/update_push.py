"""AWS: task updates through an API Gateway WebSocket API.

The WebSocket function records connections and subscriptions in the table and answers a
subscribe with the task as it stands; the notifier, on the table's stream, posts each task
change, and each chunk of its streamed output, to its subscribers. Messages are those of core.services.updates.

Order: the stream delivers one item's changes in order, and the notifier posts them in that
order. The subscription is written before the task is read for its snapshot, so no change
after the snapshot is missed; a change made just before it may be posted just after it, so a
client keeps the message with the newest `updatedAt`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.aws.context import LazyContext, build_context
from core.aws.dynamodb import DynamoStore
from core.aws.dynamodb.connections import Connection, ConnectionStore
from core.aws.dynamodb.stream_records import TaskChange
from core.domain.auth import Principal
from core.domain.models import OutputChunk, Task
from core.errors import StaleWriteError, TaskgateError, UnauthorizedError, UnavailableError, ValidationError
from core.services import updates
from core.services.context import Context

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient


log = logging.getLogger(__name__)

# API Gateway closes a WebSocket connection after two hours; its records outlive that a little.
CONNECTION_TTL_S = 2 * 3600 + 600
_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
_clients: dict[str, ApiGatewayManagementApiClient] = {}


def management_client(endpoint: str) -> ApiGatewayManagementApiClient:
    """The @connections client for `endpoint` (https://<api>.execute-api.<region>.amazonaws.com/
    <stage>), created once per container."""
    client = _clients.get(endpoint)
    if client is None:
        client = _clients[endpoint] = boto3.client(
            "apigatewaymanagementapi", endpoint_url=endpoint, config=_CLIENT_CONFIG
        )
    return client


def configured_endpoint() -> str | None:
    """WEBSOCKET_ENDPOINT, if set (the notifier and the sweeper; a custom domain)."""
    configured = os.environ.get("WEBSOCKET_ENDPOINT")
    return configured.rstrip("/") if configured else None


def endpoint(request_context: Mapping[str, Any] | None = None) -> str:
    """The @connections endpoint: WEBSOCKET_ENDPOINT when set (the notifier, which has no
    request; a custom domain), else the API's own domain and stage from the request."""
    configured = configured_endpoint()
    if configured:
        return configured
    if request_context is None:
        raise RuntimeError("Set WEBSOCKET_ENDPOINT")
    return f"https://{request_context['domainName']}/{request_context['stage']}"


@dataclass
class Push:
    """What the WebSocket functions work with: the Context, the connection records, and the
    @connections endpoint of the WebSocket API's stage."""

    ctx: Context
    connections: ConnectionStore
    endpoint: str

    def post(self, connection_id: str, message: bytes) -> bool:
        """Send `message`; False if the connection is gone (its records are then deleted)."""
        try:
            management_client(self.endpoint).post_to_connection(ConnectionId=connection_id, Data=message)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "GoneException":
                raise
            return False
        return True

    # -- the WebSocket API's routes ------------------------------------------------------

    def connect(self, connection_id: str, token: str | None) -> Principal:
        """$connect: UnauthorizedError refuses the connection (API Gateway answers 401)."""
        principal = updates.connect(self.ctx, token)
        now = self.ctx.now()
        # The connection's record (and its subscriptions') ends when its token does, if sooner.
        ends = now // 1000 + CONNECTION_TTL_S
        if principal.expires_s is not None:
            ends = min(ends, principal.expires_s)
        self.connections.put_connection(
            Connection(
                id=connection_id,
                sub=principal.sub,
                roles=sorted(principal.roles),
                server_id=principal.server_id,
                connected_at=now,
                expires_at=ends,
            )
        )
        return principal

    def close(self, connection_id: str, expires_s: int | None = None) -> None:
        """End a connection whose token expired: API Gateway closes it, its records go (its
        expiry item too: the one of `expires_s`, if the connection item is gone already)."""
        try:
            management_client(self.endpoint).delete_connection(ConnectionId=connection_id)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "GoneException":
                raise
        self.connections.delete_connection(connection_id, expires_s=expires_s)

    def disconnect(self, connection_id: str) -> None:
        self.connections.delete_connection(connection_id)

    def receive(self, connection_id: str, body: str | None) -> None:
        """subscribe, unsubscribe, $default: act on the message, or post the error back."""
        try:
            self._receive(connection_id, body)
        except Exception as exc:
            if not isinstance(exc, TaskgateError):
                log.error("WebSocket message failed", exc_info=exc)
            self.post(connection_id, updates.error_message(exc))

    def _receive(self, connection_id: str, body: str | None) -> None:
        connection = self.connections.get_connection(connection_id)
        if connection is None:  # expired, or $connect's write never landed
            raise UnauthorizedError("Connection is not registered: connect again")
        if connection.expires_at <= self.ctx.now() // 1000:  # its token expired
            self.post(connection_id, updates.error_message(UnauthorizedError(updates.TOKEN_EXPIRED)))
            self.close(connection_id)
            return
        message = updates.parse(body)
        if message.type == "unsubscribe":
            self.connections.unsubscribe(connection_id, message.task_id)
            return
        principal = Principal(
            sub=connection.sub,
            roles=frozenset(connection.roles),
            server_id=connection.server_id,
            expires_s=connection.expires_at,
        )
        task = updates.current_task(self.ctx, principal, message.task_id)
        if not task.status.is_terminal:
            try:
                self.connections.subscribe(connection, task.id, limit=updates.MAX_SUBSCRIPTIONS)
            except StaleWriteError as exc:
                if exc.current is None:
                    raise UnauthorizedError("Connection is not registered: connect again") from None
                raise ValidationError(
                    f"A connection follows at most {updates.MAX_SUBSCRIPTIONS} tasks; unsubscribe from one first"
                ) from None
            # Read again now that the subscription is stored: a change after this read reaches
            # the notifier with the subscription in place.
            task = self.ctx.store.get_task(task.id) or task
        self.post(connection_id, updates.snapshot_message(self.ctx, task))

    # -- the sweeper (core.ports.connections.ExpiringConnections) ---------------------------

    def expired(self, now_s: int, limit: int) -> list[tuple[str, int]]:
        return self.connections.expired(now_s, limit)

    def close_expired(self, connection_id: str, expires_s: int) -> None:
        try:
            self.close(connection_id, expires_s)
        except (BotoCoreError, ClientError) as error:  # throttled, unreachable: the next sweep retries
            raise UnavailableError(f"API Gateway did not close it: {error}") from error

    # -- the notifier ----------------------------------------------------------------------

    def notify(self, change: TaskChange) -> int:
        """A task was written (a stream record): post it to the task's subscribers. Returns
        how many got it. A finished task's subscriptions end. A task no connection ever
        followed has no subscribers to look for: the table is not read."""
        if not change.followed:
            return 0
        task = self._task(change)
        ends = self.connections.subscriber_ends(task.id)
        subscribers = list(ends)
        if not subscribers:
            return 0
        message = updates.task_message(task)
        sent = 0
        now_s = self.ctx.now() // 1000
        for connection_id in subscribers:
            if ends[connection_id] <= now_s:  # its token expired: closed, not told
                self.close(connection_id)
            elif self.post(connection_id, message):
                sent += 1
            else:
                self.connections.delete_connection(connection_id, task.id)
        if task.status.is_terminal:
            self.connections.end_subscriptions(task.id, subscribers)
        return sent

    def notify_output(self, chunk: OutputChunk) -> int:
        """A chunk of a task's output was stored (a stream record): post it to the task's
        subscribers. Returns how many got it."""
        subscribers = self.connections.subscribers(chunk.task_id)
        message = updates.output_message(chunk)
        sent = 0
        for connection_id in subscribers:
            if self.post(connection_id, message):
                sent += 1
            else:
                self.connections.delete_connection(connection_id, chunk.task_id)
        return sent

    def _task(self, change: TaskChange) -> Task:
        if change.outcome_elsewhere:  # a large result or error lives beside the task
            return self.ctx.store.get_task(change.task.id) or change.task
        return change.task


class LazyPush:
    """A Lambda container's Push: the Context and the connection records built on first use
    (on the table adapter's client) and kept; the endpoint is given per invocation."""

    def __init__(self, build: Callable[[], Context] = build_context) -> None:
        self.context = LazyContext(build)
        self._connections: tuple[Context, ConnectionStore] | None = None

    def __call__(self, endpoint: str) -> Push:
        ctx = self.context()
        if self._connections is None or self._connections[0] is not ctx:  # built, or built again
            if not isinstance(ctx.store, DynamoStore):
                raise TypeError("WebSocket connections are kept in the DynamoDB table")
            self._connections = (ctx, ConnectionStore(ctx.store.table_name, client=ctx.store.client))
        return Push(ctx, self._connections[1], endpoint)

    def reset(self) -> None:
        """Forget it all (tests: each has its own emulated account)."""
        self.context.reset()
        self._connections = None
        _clients.clear()

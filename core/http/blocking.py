"""The blocking transport (the Lambda functions): predict, health, cancel and webhook calls on
a urllib3 pool. Each call connects to the address `core.http.guard` checked, with the original
host in `Host` and in TLS (SNI and certificate), and follows no redirect (a 3xx could lead
anywhere). This module never imports aiohttp: the Lambda bundle does not carry it."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from core.domain import protocol
from core.domain.models import Server, Task
from core.domain.protocol import BackendRequest, Outcome
from core.http import guard
from core.http.guard import Pinned, Refusal, cancel_request, failure_kind, pin_backend, pin_webhook
from core.services.webhook_delivery import WebhookOutcome, WebhookRequest

if TYPE_CHECKING:  # imported on the first call: a cold start that makes none skips it
    import urllib3

log = logging.getLogger(__name__)


def _open(
    pool: urllib3.PoolManager,
    pinned: Pinned,
    method: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: urllib3.Timeout | float,
    preload_content: bool = True,
) -> urllib3.BaseHTTPResponse:
    target = pinned.target
    pool_kwargs: dict[str, object] = {}
    if pinned.server_hostname is not None:
        pool_kwargs = {"server_hostname": pinned.server_hostname, "assert_hostname": pinned.server_hostname}
    # A pool per (address, name): a connection is reused only for the host it was verified for.
    connections = pool.connection_from_host(
        pinned.address, target.port, target.scheme, pool_kwargs=pool_kwargs
    )
    return connections.urlopen(
        method,
        target.path,
        body=body,
        headers=pinned.headers(headers or {}),
        timeout=timeout,
        retries=False,
        redirect=False,
        assert_same_host=False,
        preload_content=preload_content,
    )


def _timeout(timeout_s: float) -> urllib3.Timeout:
    """A call's timeout: `timeout_s` to read, at most 5 s of it to connect."""
    import urllib3

    return urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s)


def predict_sync(pool: urllib3.PoolManager, request: BackendRequest) -> Outcome:
    pinned = pin_backend(request.url)
    if isinstance(pinned, Refusal):
        return protocol.refused_call(pinned.reason, pinned.final, request.server_id)
    try:
        response = _open(
            pool,
            pinned,
            "POST",
            headers=request.headers,
            body=request.body,
            timeout=_timeout(request.timeout_s),
        )
    except Exception as exc:
        log.info("predict call to %s failed: %r", request.url, exc, extra={"server_id": request.server_id})
        return protocol.transport_failure(exc, request.server_id, failure_kind(exc))
    return protocol.classify(response.status, response.data)


def health_sync(pool: urllib3.PoolManager, server: Server, timeout_s: float) -> tuple[bool, str | None]:
    pinned = pin_backend(server.endpoints.health)
    if isinstance(pinned, Refusal):
        return False, pinned.reason
    try:
        response = _open(pool, pinned, "GET", timeout=timeout_s)
    except Exception as exc:
        log.info("health check of %s failed: %r", server.id, exc)
        return False, f"health check failed ({failure_kind(exc)})"
    return protocol.health_ok(response.status, response.data, server.id)


def cancel_sync(pool: urllib3.PoolManager, task: Task, server: Server) -> None:
    call = cancel_request(task, server)
    if call is None:
        return
    url, headers, body = call
    pinned = pin_backend(url)
    if isinstance(pinned, Refusal):
        log.info("cancel call not made: %s", pinned.reason, extra={"task_id": task.id})
        return
    try:
        _open(pool, pinned, "POST", headers=headers, body=body, timeout=5.0)
    except Exception as exc:
        log.info("cancel call failed: %r", exc, extra={"task_id": task.id})


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def send_sync(pool: urllib3.PoolManager, request: WebhookRequest) -> WebhookOutcome:
    """One webhook attempt."""
    import urllib3

    started = time.monotonic()
    pinned = pin_webhook(request.url, request.policy)
    if isinstance(pinned, Refusal):
        return WebhookOutcome(None, pinned.reason, _elapsed_ms(started), final=pinned.final)
    try:
        response = _open(
            pool,
            pinned,
            "POST",
            headers=request.headers,
            body=request.body,
            timeout=_timeout(request.timeout_s),
            preload_content=False,
        )
        response.read(guard.ANSWER_LIMIT)
        response.close()  # not back to the pool: the rest of a long answer is not read
    except urllib3.exceptions.TimeoutError:
        return WebhookOutcome(None, f"timed out after {request.timeout_s:g} s", _elapsed_ms(started))
    except Exception as exc:
        return WebhookOutcome(None, failure_kind(exc), _elapsed_ms(started))
    return WebhookOutcome(response.status, None, _elapsed_ms(started))

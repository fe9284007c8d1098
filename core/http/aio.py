"""The asyncio transport (one machine): predict, health, cancel and webhook calls on an
aiohttp session. Like `core.http.blocking`, each call goes to the address `core.http.guard`
checked (the URL names the address; `Host` and TLS keep the original host) and follows no
redirect. Only the one-machine runtime imports this module."""

from __future__ import annotations

import logging
import time

import aiohttp

from core.domain import protocol
from core.domain.models import Server, Task
from core.domain.protocol import BackendRequest, Outcome
from core.http import guard
from core.http.guard import Pinned, Refusal, cancel_request, failure_kind, pin_backend, pin_webhook
from core.services.webhook_delivery import WebhookOutcome, WebhookRequest

log = logging.getLogger(__name__)


def _call(
    client: aiohttp.ClientSession,
    pinned: Pinned,
    method: str,
    *,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> aiohttp.client._RequestContextManager:
    return client.request(
        method,
        pinned.url,
        data=body,
        headers=pinned.headers(headers or {}),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        allow_redirects=False,
        server_hostname=pinned.server_hostname,
    )


async def predict_async(client: aiohttp.ClientSession, request: BackendRequest) -> Outcome:
    pinned = pin_backend(request.url)
    if isinstance(pinned, Refusal):
        return protocol.refused_call(pinned.reason, pinned.final, request.server_id)
    try:
        async with _call(
            client, pinned, "POST", timeout_s=request.timeout_s, headers=request.headers, body=request.body
        ) as response:
            return protocol.classify(response.status, await response.read())
    except Exception as exc:  # connection refused, reset, timeout
        log.info("predict call to %s failed: %r", request.url, exc, extra={"server_id": request.server_id})
        return protocol.transport_failure(exc, request.server_id, failure_kind(exc))


async def health_async(
    client: aiohttp.ClientSession, server: Server, timeout_s: float
) -> tuple[bool, str | None]:
    pinned = pin_backend(server.endpoints.health)
    if isinstance(pinned, Refusal):
        return False, pinned.reason
    try:
        async with _call(client, pinned, "GET", timeout_s=timeout_s) as response:
            return protocol.health_ok(response.status, await response.read(), server.id)
    except Exception as exc:
        log.info("health check of %s failed: %r", server.id, exc)
        return False, f"health check failed ({failure_kind(exc)})"


async def cancel_async(client: aiohttp.ClientSession, task: Task, server: Server) -> None:
    call = cancel_request(task, server)
    if call is None:
        return
    url, headers, body = call
    pinned = pin_backend(url)
    if isinstance(pinned, Refusal):
        log.info("cancel call not made: %s", pinned.reason, extra={"task_id": task.id})
        return
    try:
        async with _call(client, pinned, "POST", timeout_s=5.0, headers=headers, body=body) as response:
            await response.read()
    except Exception as exc:
        log.info("cancel call failed: %r", exc, extra={"task_id": task.id})


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


async def send_async(client: aiohttp.ClientSession, request: WebhookRequest) -> WebhookOutcome:
    """One webhook attempt."""
    started = time.monotonic()
    pinned = pin_webhook(request.url, request.policy)
    if isinstance(pinned, Refusal):
        return WebhookOutcome(None, pinned.reason, _elapsed_ms(started), final=pinned.final)
    try:
        async with _call(
            client, pinned, "POST", timeout_s=request.timeout_s, headers=request.headers, body=request.body
        ) as response:
            await response.content.read(guard.ANSWER_LIMIT)
            return WebhookOutcome(response.status, None, _elapsed_ms(started))
    except TimeoutError:
        return WebhookOutcome(None, f"timed out after {request.timeout_s:g} s", _elapsed_ms(started))
    except Exception as exc:  # connection refused, reset
        return WebhookOutcome(None, failure_kind(exc), _elapsed_ms(started))

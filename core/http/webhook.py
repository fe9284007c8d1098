"""The POSTs to webhooks, asynchronous (one machine) and blocking (Lambda). Redirects are not
followed (a redirect could lead to an address the URL rules refuse); the host is checked
again, resolved, at call time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from core.domain.urls import resolves_safely
from core.services.webhook_delivery import WebhookOutcome, WebhookRequest

if TYPE_CHECKING:
    import aiohttp
    import urllib3

UNSAFE = "refused: the webhook resolves to a cloud metadata address"
# Read at most this much of a receiver's answer: only its status is recorded.
_ANSWER_LIMIT = 64 * 1024


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _failure(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def send_async(client: aiohttp.ClientSession, request: WebhookRequest) -> WebhookOutcome:
    import aiohttp

    started = time.monotonic()
    if not resolves_safely(request.url):
        return WebhookOutcome(None, UNSAFE, 0, final=True)
    try:
        async with client.post(
            request.url,
            data=request.body,
            headers=request.headers,
            timeout=aiohttp.ClientTimeout(total=request.timeout_s),
            allow_redirects=False,
        ) as response:
            await response.content.read(_ANSWER_LIMIT)
            return WebhookOutcome(response.status, None, _elapsed_ms(started))
    except TimeoutError:
        return WebhookOutcome(None, f"timed out after {request.timeout_s:g} s", _elapsed_ms(started))
    except Exception as exc:  # connection refused, reset, DNS
        return WebhookOutcome(None, _failure(exc), _elapsed_ms(started))


def send_sync(pool: urllib3.PoolManager, request: WebhookRequest) -> WebhookOutcome:
    import urllib3

    started = time.monotonic()
    if not resolves_safely(request.url):
        return WebhookOutcome(None, UNSAFE, 0, final=True)
    try:
        response = pool.request(
            "POST",
            request.url,
            body=request.body,
            headers=request.headers,
            timeout=urllib3.Timeout(connect=min(5.0, request.timeout_s), read=request.timeout_s),
            retries=False,
            redirect=False,
            preload_content=False,
        )
        response.read(_ANSWER_LIMIT)
        response.close()  # not back to the pool: the rest of a long answer is not read
    except urllib3.exceptions.TimeoutError:
        return WebhookOutcome(None, f"timed out after {request.timeout_s:g} s", _elapsed_ms(started))
    except Exception as exc:
        return WebhookOutcome(None, _failure(exc), _elapsed_ms(started))
    return WebhookOutcome(response.status, None, _elapsed_ms(started))

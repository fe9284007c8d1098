"""The HTTP calls to backends: predict, health and cancel, asynchronous (one machine) and
blocking (Lambda). Decisions about the answers are in `core.domain.protocol`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from core.domain import protocol
from core.domain.protocol import BackendRequest, Kind, Outcome
from core.domain.urls import resolves_safely

if TYPE_CHECKING:
    import aiohttp
    import urllib3

    from core.domain.models import Server, Task

log = logging.getLogger(__name__)

UNSAFE = "refused: the endpoint resolves to a cloud metadata address"
# Redirects are never followed (aiohttp would by default; urllib3's retries=False does not):
# a backend's 3xx pointing at a metadata address would bypass the URL checks.


def _unsafe(url: str) -> Outcome | None:
    return None if resolves_safely(url) else Outcome(Kind.FAILED, error=UNSAFE)


async def predict_async(client: aiohttp.ClientSession, request: BackendRequest) -> Outcome:
    import aiohttp

    if refused := _unsafe(request.url):
        return refused
    timeout = aiohttp.ClientTimeout(total=request.timeout_s)
    try:
        async with client.post(
            request.url, data=request.body, headers=request.headers, timeout=timeout, allow_redirects=False
        ) as response:
            return protocol.classify(response.status, await response.read())
    except Exception as exc:  # connection refused, reset, timeout, bad URL
        return protocol.transport_failure(exc)


def predict_sync(pool: urllib3.PoolManager, request: BackendRequest) -> Outcome:
    import urllib3

    if refused := _unsafe(request.url):
        return refused
    try:
        response = pool.request(
            "POST",
            request.url,
            body=request.body,
            headers=request.headers,
            timeout=urllib3.Timeout(connect=min(5.0, request.timeout_s), read=request.timeout_s),
            retries=False,
        )
    except Exception as exc:
        return protocol.transport_failure(exc)
    return protocol.classify(response.status, response.data)


async def health_async(
    client: aiohttp.ClientSession, server: Server, timeout_s: float
) -> tuple[bool, str | None]:
    import aiohttp

    url = server.endpoints.health
    if not resolves_safely(url):
        return False, UNSAFE
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with client.get(url, timeout=timeout, allow_redirects=False) as response:
            return protocol.health_ok(response.status, await response.read(), server.id)
    except Exception as exc:
        return False, f"health check failed ({type(exc).__name__})"


def health_sync(pool: urllib3.PoolManager, server: Server, timeout_s: float) -> tuple[bool, str | None]:
    url = server.endpoints.health
    if not resolves_safely(url):
        return False, UNSAFE
    try:
        response = pool.request("GET", url, timeout=timeout_s, retries=False)
    except Exception as exc:
        return False, f"health check failed ({type(exc).__name__})"
    return protocol.health_ok(response.status, response.data, server.id)


def cancel_request(task: Task, server: Server) -> tuple[str, dict[str, str], bytes] | None:
    """`endpoints.cancel`, when registered: told (best effort) that a task was cancelled."""
    url = server.endpoints.cancel
    if url is None or not resolves_safely(url):
        return None
    headers = {"Content-Type": "application/json"}
    if server.api_key:
        headers["Authorization"] = f"Bearer {server.api_key}"
    return url, headers, msgspec.json.encode({"id": task.id, "task_id": task.id, "attempt": task.attempts})


async def cancel_async(client: aiohttp.ClientSession, task: Task, server: Server) -> None:
    import aiohttp

    call = cancel_request(task, server)
    if call is None:
        return
    url, headers, body = call
    try:
        async with client.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=5.0), allow_redirects=False
        ) as response:
            await response.read()
    except Exception as exc:
        log.info("cancel call failed: %s", exc, extra={"task_id": task.id})


def cancel_sync(pool: urllib3.PoolManager, task: Task, server: Server) -> None:
    call = cancel_request(task, server)
    if call is None:
        return
    url, headers, body = call
    try:
        pool.request("POST", url, body=body, headers=headers, timeout=5.0, retries=False)
    except Exception as exc:
        log.info("cancel call failed: %s", exc, extra={"task_id": task.id})

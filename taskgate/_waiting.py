"""How the clients wait: the pauses of a polling `wait()`, the pause a 429 asks for, and the
errors that end a stream midway (it is then read again from its last event)."""

from __future__ import annotations

import time

import httpx

from taskgate.errors import RateLimited

# wait(): the pause between polls grows from the first to the last, so a long wait costs about
# one request a second, well inside the default rate limit (100 a minute).
FIRST_PAUSE = 0.1
LAST_PAUSE = 1.0
PAUSE_GROWTH = 1.5
STREAM_BROKEN = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def rate_limit_pause(exc: RateLimited, deadline: float | None) -> float:
    """How long to wait out a 429 while polling or streaming; raises it when that would pass
    the deadline."""
    wait_s = exc.retry_after if exc.retry_after is not None else LAST_PAUSE
    if deadline is not None and wait_s > deadline - time.monotonic():
        raise exc
    return wait_s


def next_pause(pause: float) -> float:
    return min(pause * PAUSE_GROWTH, LAST_PAUSE)

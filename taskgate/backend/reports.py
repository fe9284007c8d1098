"""A job's reports to taskgate: progress and the result by PUT to the callback URL, output
chunks by POST to `<callback URL>/output`, all with the callback token, one at a time in the
order they were made, each retried briefly when the failure may pass."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from taskgate.errors import retry_after

log = logging.getLogger("taskgate.backend")

# Tries of one report: the first and three more, 0.1, 0.3 and 0.9 s apart (about 1.3 s in
# all) unless the gateway's Retry-After asks for longer, up to RETRY_AFTER_CAP_S.
TRIES = 4
FIRST_PAUSE_S = 0.1
PAUSE_GROWTH = 3.0
RETRY_AFTER_CAP_S = 10.0
# 408, 425, 429 and 5xx may pass; any other answer is final.
TRANSIENT = frozenset({408, 425, 429})


class Kind(enum.Enum):
    PROGRESS = "progress"
    OUTPUT = "output"
    RESULT = "result"
    FAILURE = "failure"


@dataclass(frozen=True)
class Report:
    kind: Kind
    body: bytes

    @property
    def final(self) -> bool:
        return self.kind in (Kind.RESULT, Kind.FAILURE)

    @property
    def status(self) -> str:
        """What the report says of the task: PROCESSING, OUTPUT, COMPLETED or FAILED."""
        return {
            Kind.PROGRESS: "PROCESSING",
            Kind.OUTPUT: "OUTPUT",
            Kind.RESULT: "COMPLETED",
            Kind.FAILURE: "FAILED",
        }[self.kind]

    @classmethod
    def progress(cls, body: dict[str, Any]) -> Report:
        return cls(Kind.PROGRESS, msgspec.json.encode(body))

    @classmethod
    def output(cls, data: bytes) -> Report:
        return cls(Kind.OUTPUT, b'{"data":' + data + b"}")

    @classmethod
    def result(cls, result: Any) -> Report:
        return cls(Kind.RESULT, msgspec.json.encode({"status": "COMPLETED", "result": result}))

    @classmethod
    def failure(cls, error: str) -> Report:
        return cls(Kind.FAILURE, msgspec.json.encode({"status": "FAILED", "error": error}))


class ReportQueue:
    """One job's reports, sent one at a time in order by `run()`. A progress report still
    waiting when another comes is replaced by it: only the latest reading matters, and a
    handler reporting in a tight loop costs one request per round trip, not per call."""

    def __init__(self, send: Callable[[Report], Awaitable[None]]) -> None:
        self._send = send
        self._waiting: deque[Report] = deque()
        self._wake = asyncio.Event()
        self._closed = False

    def put(self, report: Report) -> None:
        if self._closed:
            return  # the job is over: a late call from its thread changes nothing
        last = self._waiting[-1] if self._waiting else None
        if last is not None and last.kind is Kind.PROGRESS and report.kind is Kind.PROGRESS:
            self._waiting[-1] = report
        else:
            self._waiting.append(report)
        self._wake.set()

    def close(self, final: Report | None = None) -> None:
        """No more reports after `final` (if any); `run()` ends once the queue is sent."""
        if final is not None:
            self.put(final)
        self._closed = True
        self._wake.set()

    def drop(self) -> None:
        """Send nothing more (the task was cancelled or its time is up)."""
        self._waiting.clear()
        self.close()

    async def run(self) -> None:
        while True:
            while self._waiting:
                await self._send(self._waiting.popleft())
            if self._closed:
                return
            self._wake.clear()
            await self._wake.wait()


async def deliver(client: httpx.AsyncClient, callback_url: str, token: str, report: Report) -> int | None:
    """Send one report; its last HTTP status, or None when none came (unreachable, no URL)."""
    if report.kind is Kind.OUTPUT:
        method, url = "POST", callback_url.rstrip("/") + "/output"
    else:
        method, url = "PUT", callback_url
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    status: int | None = None
    pause = FIRST_PAUSE_S
    for attempt in range(1, TRIES + 1):
        wait_s = pause
        try:
            response = await client.request(method, url, content=report.body, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            log.warning("report %s of %s not sent: %s", report.status, url, exc)
            return None
        except httpx.TransportError as exc:
            status = None
            log.info("report %s to %s failed (try %d): %r", report.status, url, attempt, exc)
        else:
            status = response.status_code
            if status < 400:
                return status
            if status not in TRANSIENT and status < 500:
                log.warning("report %s to %s refused: %d %s", report.status, url, status, response.text[:200])
                return status
            asked = retry_after(response.headers.get("retry-after"))
            if asked is not None:
                wait_s = min(max(asked, pause), RETRY_AFTER_CAP_S)
        if attempt < TRIES:
            await asyncio.sleep(wait_s)
            pause *= PAUSE_GROWTH
    log.warning("report %s to %s given up after %d tries (last: %s)", report.status, url, TRIES, status)
    return status

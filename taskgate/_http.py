"""The client's HTTP: one httpx connection pool, JSON out and in, and each reply turned into a
typed value or a `taskgate.errors` error."""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from taskgate.errors import NetworkError, TaskgateError, from_response

URL_ENV = "TASKGATE_URL"
TOKEN_ENV = "TASKGATE_TOKEN"
DEFAULT_URL = "http://localhost:8787"

R = TypeVar("R")
Day = str | datetime.date


class Connection:
    """Requests to one gateway with one token. `url` defaults to $TASKGATE_URL (else
    http://localhost:8787), `token` to $TASKGATE_TOKEN (none: no Authorization header)."""

    def __init__(
        self, url: str | None, token: str | None, *, timeout: float, transport: httpx.BaseTransport | None
    ) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        token = os.environ.get(TOKEN_ENV) if token is None else token
        headers = {"Accept": "application/json", "User-Agent": "taskgate-python-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        reply: type[R],
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> R:
        """The 2xx reply decoded as `reply`; any other answer, or none, raised as an error."""
        sent = dict(headers or {})
        content = None
        if body is not None:
            content = msgspec.json.encode(body)
            sent["Content-Type"] = "application/json"
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = self._http.request(method, path, content=content, params=params, headers=sent, **extra)
        except httpx.TimeoutException as exc:
            raise NetworkError("Timed out", f"{method} {self.url}{path}: no answer in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise NetworkError("Network error", f"{method} {self.url}{path}: {exc}") from exc
        if not response.is_success:
            raise from_response(response)
        try:
            return msgspec.json.decode(response.content, type=reply)
        except msgspec.MsgspecError as exc:
            status = response.status_code
            raise TaskgateError(status, "Unexpected reply", f"{method} {path}: {exc}") from exc


def segment(value: str) -> str:
    """A path id, escaped: whatever it holds stays one path segment."""
    if not value:
        raise ValueError("an id must not be empty")
    return quote(value, safe="")


def day_query(date: Day | None) -> dict[str, str]:
    """`?date=YYYY-MM-DD` for a statistics call (none: the gateway's today, UTC)."""
    if date is None:
        return {}
    return {"date": date.isoformat() if isinstance(date, datetime.date) else date}

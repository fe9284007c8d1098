"""The client's HTTP: one httpx connection pool, JSON out and in, and each reply turned into a
typed value or a `taskgate.errors` error."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from taskgate.errors import NetworkError, TaskgateError, from_response

if TYPE_CHECKING:
    from taskgate._api import Call

URL_ENV = "TASKGATE_URL"
TOKEN_ENV = "TASKGATE_TOKEN"
DEFAULT_URL = "http://localhost:8787"

R = TypeVar("R")

Day = str | datetime.date


def _defaults(url: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    """The base URL and the headers every request carries."""
    base = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    token = os.environ.get(TOKEN_ENV) if token is None else token
    headers = {"Accept": "application/json", "User-Agent": "taskgate-python-client"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return base, headers


def _request_args(call: Call[Any]) -> dict[str, Any]:
    headers = dict(call.headers)
    content = None
    if call.body is not None:
        content = msgspec.json.encode(call.body)
        headers["Content-Type"] = "application/json"
    args: dict[str, Any] = {"content": content, "params": dict(call.params) or None, "headers": headers}
    if call.timeout is not None:
        args["timeout"] = call.timeout
    return args


def transport_error(method: str, url: str, exc: httpx.TransportError) -> NetworkError:
    if isinstance(exc, httpx.TimeoutException):
        return NetworkError("Timed out", f"{method} {url}: no answer in time ({exc})")
    return NetworkError("Network error", f"{method} {url}: {exc}")


def decode(call: Call[R], response: httpx.Response) -> R:
    """The 2xx reply decoded as the call's reply type; any other answer raised as an error."""
    if not response.is_success:
        raise from_response(response)
    try:
        return msgspec.json.decode(response.content, type=call.reply)
    except msgspec.MsgspecError as exc:
        raise TaskgateError(
            response.status_code, "Unexpected reply", f"{call.method} {call.path}: {exc}"
        ) from exc


class Connection:
    """Requests to one gateway with one token. `url` defaults to $TASKGATE_URL (else
    http://localhost:8787), `token` to $TASKGATE_TOKEN (none: no Authorization header)."""

    def __init__(
        self, url: str | None, token: str | None, *, timeout: float, transport: httpx.BaseTransport | None
    ) -> None:
        self.url, headers = _defaults(url, token)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[R]) -> R:
        try:
            response = self._http.request(call.method, call.path, **_request_args(call))
        except httpx.TransportError as exc:
            raise transport_error(call.method, f"{self.url}{call.path}", exc) from exc
        return decode(call, response)

    @contextlib.contextmanager
    def stream(self, path: str, headers: Mapping[str, str], read_timeout: float) -> Iterator[Iterator[str]]:
        """The lines of a streamed GET (a 4xx/5xx raised as its error)."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
        try:
            with self._http.stream("GET", path, headers=dict(headers), timeout=timeout) as response:
                if not response.is_success:
                    response.read()
                    raise from_response(response)
                yield response.iter_lines()
        except httpx.TransportError as exc:
            raise transport_error("GET", f"{self.url}{path}", exc) from exc


class AsyncConnection:
    """The same over httpx.AsyncClient."""

    def __init__(
        self,
        url: str | None,
        token: str | None,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.url, headers = _defaults(url, token)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[R]) -> R:
        try:
            response = await self._http.request(call.method, call.path, **_request_args(call))
        except httpx.TransportError as exc:
            raise transport_error(call.method, f"{self.url}{call.path}", exc) from exc
        return decode(call, response)

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, headers: Mapping[str, str], read_timeout: float
    ) -> AsyncIterator[AsyncIterator[str]]:
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
        try:
            async with self._http.stream("GET", path, headers=dict(headers), timeout=timeout) as response:
                if not response.is_success:
                    await response.aread()
                    raise from_response(response)
                yield response.aiter_lines()
        except httpx.TransportError as exc:
            raise transport_error("GET", f"{self.url}{path}", exc) from exc


def segment(value: str) -> str:
    """A path id, escaped: whatever it holds stays one path segment."""
    if not value:
        raise ValueError("an id must not be empty")
    return quote(value, safe="")


def day_query(date: Day | None, name: str = "date") -> dict[str, str]:
    """`?date=YYYY-MM-DD` for a statistics call (none: the gateway's today, UTC)."""
    if date is None:
        return {}
    return {name: date.isoformat() if isinstance(date, datetime.date) else date}

"""Call-time checks of outbound URLs, shared by both transports: resolve the host once, check
every address it resolves to, and pin the call to the checked address (DNS rebinding: the
client never resolves the name again). `Host` and the TLS server name stay the original host.

Standard library only: the blocking (Lambda) and the asyncio (one machine) transports both
import this module.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec

from core.domain.models import Server, Task
from core.domain.urls import IPAddress, Target, WebhookPolicy, backend_refusal, parse_target
from core.errors import ValidationError

Refuse = Callable[[IPAddress], "str | None"]

# Read at most this much of a webhook receiver's answer: only its status is recorded.
ANSWER_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Pinned:
    """A call that may go ahead, to `address` (checked) for `target`."""

    target: Target
    address: str

    @property
    def url(self) -> str:
        return self.target.url_at(self.address)

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        kept = {k: v for k, v in headers.items() if k.lower() != "host"}
        return {**kept, "Host": self.target.host_header}

    @property
    def server_hostname(self) -> str | None:
        """The name TLS sends (SNI) and verifies the certificate against."""
        if self.target.scheme != "https" or self.target.ip is not None:
            return None
        return self.target.host


@dataclass(frozen=True)
class Refusal:
    """A call that must not (`final`: the address is refused) or cannot (no address) go ahead."""

    reason: str
    final: bool


def pin(url: str, refuse: Refuse, what: str = "endpoint") -> Pinned | Refusal:
    try:
        target = parse_target(url, what)
    except ValidationError:
        return Refusal(f"refused: the {what} URL is not in a form taskgate calls", final=True)
    addresses: list[IPAddress]
    literal = target.ip
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            return Refusal(f"the {what} host could not be resolved", final=False)
    for ip in addresses:
        if why := refuse(ip):
            return Refusal(f"refused: the {what} resolves to {why}", final=True)
    return Pinned(target, str(addresses[0]))


def pin_backend(url: str) -> Pinned | Refusal:
    return pin(url, backend_refusal)


def pin_webhook(url: str, policy: WebhookPolicy) -> Pinned | Refusal:
    return pin(url, policy.refusal, "webhook")


def failure_kind(exc: BaseException) -> str:
    """What went wrong, in words that carry no address, URL or internal detail."""
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return "timed out"
    if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        return "connection refused"
    if isinstance(exc, ConnectionResetError) or "reset" in str(exc).lower():
        return "connection reset"
    if "ssl" in type(exc).__name__.lower() or "certificate" in str(exc).lower():
        return "TLS failed"
    return f"connection failed ({type(exc).__name__})"


def cancel_request(task: Task, server: Server) -> tuple[str, dict[str, str], bytes] | None:
    """`endpoints.cancel`, when registered: told (best effort) that a task was cancelled."""
    url = server.endpoints.cancel
    if url is None:
        return None
    headers = {"Content-Type": "application/json"}
    if server.api_key:
        headers["Authorization"] = f"Bearer {server.api_key}"
    return url, headers, msgspec.json.encode({"id": task.id, "task_id": task.id, "attempt": task.attempts})

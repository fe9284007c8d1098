"""Open WebSocket connections that must end when their token does.

One machine closes a socket at its token's `exp` itself (handlers/local). On AWS nothing runs
while a connection is silent: the sweeper asks this port for the connections whose token has
expired and closes them.
"""

from __future__ import annotations

from typing import Protocol


class ExpiringConnections(Protocol):
    def expired(self, now_s: int, limit: int) -> list[tuple[str, int]]:
        """(connection id, expiry in epoch seconds) of the connections whose token expired at
        or before `now_s`, at most `limit`."""
        ...

    def close_expired(self, connection_id: str, expires_s: int) -> None:
        """Close it (one already closed is fine) and forget it. UnavailableError when that
        cannot be done now: it is listed again on the next call."""
        ...

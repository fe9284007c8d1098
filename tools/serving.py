"""uvicorn for `taskgate serve`, `dev` and `dev --aws`, with one addition: when it starts to
shut down, the app's open task streams are told first (`on_shutdown`), so they end at once
(their clients reconnect with Last-Event-ID) instead of holding the process until their task
is done. Whatever else is in flight gets GRACEFUL_SHUTDOWN_S to finish."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import uvicorn

GRACEFUL_SHUTDOWN_S = 5
# uvicorn's own exit status when the server could not start (the port is taken, ...).
STARTUP_FAILURE = 3


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


def run(app: Any, *, on_shutdown: Callable[[], None], **options: Any) -> None:
    """As `uvicorn.run(app, **options)`."""
    server = _Server(
        uvicorn.Config(app, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **options), on_shutdown
    )
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)

"""Running an ASGI app under uvicorn for `taskgate serve`, `dev` and `dev --aws`:

- the port is bound first: taken, one clear line and exit 1, nothing else printed;
- the announcement (URLs, the admin token) is printed only once the server listens;
- when it starts to shut down, the app's open task streams are told first (`on_shutdown`), so
  they end at once (their clients reconnect with Last-Event-ID) instead of holding the process
  until their task is done. Whatever else is in flight gets GRACEFUL_SHUTDOWN_S to finish.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from core.domain import auth

EXIT_CANNOT_LISTEN = 1
GRACEFUL_SHUTDOWN_S = 5


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (SO_REUSEADDR, as uvicorn's own)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family)


def cannot_listen(command: str, host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{command}: port {port} on {host} is taken (another process listens there); "
            "stop it or choose another with --port"
        )
    return f"{command}: cannot listen on {host}:{port}: {exc.strerror or exc}"


def announce_dev(jwt_secret: str, base: str, *, docs: bool, refused_by: str) -> None:
    """The lines `taskgate dev` and `dev --aws` print under their first: where to look, an
    admin token for the dashboard and the API (7 days), and a request to try."""
    token = auth.mint(jwt_secret, sub="dev-admin", roles=[auth.ADMIN], ttl_s=7 * 86_400)
    print(f"  health:  {base}/health")
    if docs:
        print(f"  docs:    {base}/docs")
    print(f"  dashboard: {base}/dashboard  (paste the token below)")
    print(f"  admin token (7 days): {token}")
    print(f"  webhooks: loopback receivers allowed (development only; {refused_by} refuses them)")
    print(f'  try:     curl -H "Authorization: Bearer $TOKEN" {base}/api/servers', flush=True)


class _Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, announce: Callable[[], None], on_shutdown: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self._announce = announce
        self._on_shutdown = on_shutdown

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._announce()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


def listen(command: str, host: str, port: int) -> socket.socket | None:
    """The listening socket, or None when the port cannot be had (the reason printed)."""
    try:
        return bind(host, port)
    except OSError as exc:
        print(cannot_listen(command, host, port, exc), file=sys.stderr)
        return None


def serve(
    command: str,
    app: Any,
    host: str,
    port: int,
    *,
    sock: socket.socket | None = None,
    announce: Callable[[], None] = lambda: None,
    on_shutdown: Callable[[], None] = lambda: None,
    **config: Any,
) -> int:
    """Serve `app` until stopped on `sock` (bound here when not given); `announce()` once it
    listens, `on_shutdown()` when it starts to stop. Exit code: 0, or 1 when it could not
    listen (the reason printed to standard error)."""
    if sock is None:
        sock = listen(command, host, port)
        if sock is None:
            return EXIT_CANNOT_LISTEN
    options = {"timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S, **config}
    server = _Server(uvicorn.Config(app, host=host, port=port, **options), announce, on_shutdown)
    with sock:
        server.run(sockets=[sock])
    return 0 if server.started else EXIT_CANNOT_LISTEN

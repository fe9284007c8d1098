"""The floor: a relay with no taskgate logic that makes the same HTTP hops as `taskgate serve`
with a synchronous backend and `async: false`.

    client --POST--> relay --POST /predict--> backend
    client <--reply-- relay <--reply--------- backend

taskgate's path for that task is the same two requests on the same stack (uvicorn with uvloop
and httptools in, one aiohttp session with kept-alive connections out); what it adds is its
own work: auth, validation, the store, dispatch and the sync wait. No callback: a synchronous
backend answers inline. Backends are taken in turn (round-robin).

    python -m bench.relay PORT BACKEND_URL [BACKEND_URL ...]
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import aiohttp
import uvicorn

HEALTH = b'{"status":"healthy"}'


class Relay:
    def __init__(self, backends: list[str]) -> None:
        self._targets = itertools.cycle([f"{url}/predict" for url in backends])
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["path"] == "/health":
            await _reply(send, 200, HEALTH)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        assert self._session is not None
        async with self._session.post(
            next(self._targets), data=body, headers={"Content-Type": "application/json"}
        ) as reply:
            content = await reply.read()
            await _reply(send, reply.status, content)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
                self._session = aiohttp.ClientSession(connector=connector)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _reply(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    uvicorn.run(
        Relay(sys.argv[2:]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        lifespan="on",
    )

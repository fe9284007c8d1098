"""`/ws` on one machine: task updates over WebSocket, fed by the in-process UpdateHub.

A bad or missing `?token=` is refused before the upgrade with the HTTP 401 body (or, on a
server without the denial-response extension, accepted and closed with code 4401). The
connection is closed with code 4401 when its token expires, and a subscribe that arrives
after (a race with the close) is refused. A client
whose outbox overflows is closed with code 1008; it may reconnect and subscribe again, and
gets the current state first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from core.domain.auth import Principal
from core.errors import TaskgateError, UnauthorizedError
from core.local.update_hub import Follower, UpdateHub
from core.services import updates
from core.services.context import Context
from handlers._http import error_response

log = logging.getLogger("taskgate.ws")

UNAUTHORIZED_CLOSE = 4401
TOO_SLOW_CLOSE = 1008


async def task_updates(websocket: WebSocket) -> None:
    ctx: Context = websocket.app.state.context
    hub: UpdateHub = websocket.app.state.update_hub
    try:
        principal = updates.connect(ctx, websocket.query_params.get("token"))
    except UnauthorizedError as exc:
        await _refuse(websocket, exc.details)
        return
    await websocket.accept()
    follower = Follower(principal)
    jobs = [
        asyncio.create_task(_read(websocket, ctx, hub, follower)),
        asyncio.create_task(_write(websocket, follower)),
        asyncio.create_task(follower.overflowed.wait()),
        asyncio.create_task(_token_expiry(ctx, principal)),
    ]
    try:
        done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
        if jobs[2] in done or jobs[3] in done:
            jobs[1].cancel()  # it may be stuck sending to a client that does not read
            code, reason = (
                (TOO_SLOW_CLOSE, "Too slow: updates were not read")
                if jobs[2] in done
                else (UNAUTHORIZED_CLOSE, updates.TOKEN_EXPIRED)
            )
            log.info("closing a WebSocket client (%s): %s", principal.sub, reason)
            with contextlib.suppress(Exception):
                await websocket.close(code, reason)
    finally:
        hub.drop(follower)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


async def _token_expiry(ctx: Context, principal: Principal) -> None:
    """Returns when the connection's token expires: the connection ends with it."""
    left = updates.seconds_left(principal, ctx.now())
    if left is None:
        await asyncio.Event().wait()  # never
        return
    await asyncio.sleep(max(0.0, left))


async def _refuse(websocket: WebSocket, details: str) -> None:
    denial = error_response(401, "Unauthorized", details, {"WWW-Authenticate": 'Bearer realm="taskgate"'})
    try:
        await websocket.send_denial_response(denial)
    except RuntimeError:  # the server cannot answer an upgrade with a response
        await websocket.accept()
        await websocket.close(UNAUTHORIZED_CLOSE, details[:120])


async def _read(websocket: WebSocket, ctx: Context, hub: UpdateHub, follower: Follower) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                request = updates.parse(message.get("text") or message.get("bytes"))
                if request.type == "subscribe":
                    hub.subscribe(ctx, follower, request.task_id)
                else:
                    hub.unsubscribe(follower, request.task_id)
            except Exception as exc:
                if not isinstance(exc, TaskgateError):
                    log.error("WebSocket message failed", exc_info=exc)
                follower.offer(updates.error_message(exc))


async def _write(websocket: WebSocket, follower: Follower) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await follower.next()
            await websocket.send_text(message.decode())


routes = [WebSocketRoute("/ws", task_updates)]

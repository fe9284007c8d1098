"""The one-machine deployment: every route group in one Starlette app on SQLite, with the
dispatcher and the sweeper running in its event loop."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette

from core.config import Config
from core.local.events import LocalEvents
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.local.update_hub import UpdateHub
from core.services.context import Context
from core.services.stats import Recorder, recorder
from core.services.webhook_delivery import WebhookWaker
from handlers._http import create_app
from handlers.local import ws
from handlers.routes import ROUTES

COUNTER_BATCH_S = 0.05


def secret_for(db_path: str) -> str:
    """JWT_SECRET if set; else a secret kept beside the database, made on first run, so
    tokens minted by `taskgate token --db` stay valid across restarts."""
    if os.environ.get("JWT_SECRET"):
        return os.environ["JWT_SECRET"]
    path = Path(f"{db_path}.secret")
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def build_context(db_path: str, **overrides: object) -> Context:
    config = Config.from_env(jwt_secret=secret_for(db_path), **overrides)
    events = LocalEvents()
    ctx = Context(store=SqliteStore(db_path), queue=CallbackQueue(), config=config, events=events)
    # Statistics, counted as tasks are written; held back 50 ms so a burst costs one write per key.
    events.listeners.append(Recorder(ctx, batch_s=COUNTER_BATCH_S))
    events.listeners.append(WebhookWaker(ctx))  # a finished task's webhook, sent now
    return ctx


def build_app(ctx: Context) -> Starlette:
    # /ws is served here only: in AWS the WebSocket API has functions of its own.
    app = create_app([*ROUTES, *ws.routes], ctx)
    hub = UpdateHub()
    ctx.events.listeners.append(hub)  # every task write reaches the connections following it
    ctx.events.output_listeners.append(hub.on_output)  # and every chunk of streamed output
    app.state.update_hub = hub

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Imported here: the docs Lambda imports this module for ROUTES, without aiohttp.
        from core.local.runtime import LocalRuntime

        runtime = LocalRuntime(ctx)
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()
            counting = recorder(ctx)
            if counting is not None:
                counting.flush()
            ctx.store.close()

    app.router.lifespan_context = lifespan
    return app

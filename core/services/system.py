"""taskgate's own health."""

from __future__ import annotations

import logging
from typing import Any

from core.services.context import Context

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def health(ctx: Context) -> dict[str, Any]:
    """Healthy when the store answers a read."""
    try:
        ctx.store.get_setting("health-probe")
    except Exception:
        log.exception("store health probe failed")
        return {"status": "unhealthy", "version": VERSION, "store": "unreachable", "time": ctx.now()}
    return {"status": "healthy", "version": VERSION, "store": "ok", "time": ctx.now()}

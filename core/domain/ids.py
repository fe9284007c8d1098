"""Identifiers and the clock."""

from __future__ import annotations

import re
import secrets
import time

from core.errors import ValidationError

_PATH_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_task_id() -> str:
    return f"task_{secrets.token_hex(10)}"


def new_server_id() -> str:
    return f"server_{secrets.token_hex(6)}"


def check_path_id(value: str, kind: str) -> str:
    """A path id is malformed only when too long or outside [A-Za-z0-9_-]; else it may be
    unknown (404), like the reference's `task_abc123`."""
    if not _PATH_ID.match(value):
        raise ValidationError(f"Invalid {kind} id: use 1-128 characters from A-Z, a-z, 0-9, '_' and '-'")
    return value

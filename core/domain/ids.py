"""Identifiers and the clock."""

from __future__ import annotations

import re
import secrets
import threading
import time

from core.errors import ValidationError

_PATH_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_last = (0, 0)  # (ms, sequence) of the last id this process made
_last_lock = threading.Lock()


def new_task_id() -> str:
    """`task_` + the creation time (ms) + a sequence number within that millisecond + 40 random
    bits, in hex: ids made by one process sort in the order they were made (a burst past 4,096
    in one millisecond borrows the next one), so ordering by (queued time, id) is FIFO for tasks
    created together: the scheduler's tie-break. Across processes, ids of one millisecond are in
    no particular order."""
    global _last
    with _last_lock:
        ms, sequence = _last
        now = now_ms()
        if now > ms:
            ms, sequence = now, 0
        elif sequence < 0xFFF:
            sequence += 1
        else:
            ms, sequence = ms + 1, 0
        _last = (ms, sequence)
    return f"task_{ms:011x}{sequence:03x}{secrets.token_hex(5)}"


def new_server_id() -> str:
    return f"server_{secrets.token_hex(6)}"


def check_path_id(value: str, kind: str) -> str:
    """A path id is malformed only when too long or outside [A-Za-z0-9_-]; else it may be
    unknown (404), like the reference's `task_abc123`."""
    if not _PATH_ID.match(value):
        raise ValidationError(f"Invalid {kind} id: use 1-128 characters from A-Z, a-z, 0-9, '_' and '-'")
    return value

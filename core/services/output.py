"""Streamed output: a running task's backend appends chunks; readers follow the task as
Server-Sent Events (`status` on each change, `output` per chunk from the first, `done` last).

Chunks are numbered from 0 in arrival order across the task's attempts; an `output` event's
`id:` is its index, so a reader that reconnects with `Last-Event-ID: n` gets n+1 onwards. A
chunk is stored in the same atomic write that counts it on the task, and only while the task
is PROCESSING: once a reader sees the task finished, every chunk it will ever have is stored.

One machine streams until `done`, woken by the writes. AWS answers in one piece: a response
carries what arrives within STREAM_WAIT_S and starts with `retry:`, and the client reconnects
(EventSource does so by itself).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from core.domain import auth
from core.domain.auth import Principal
from core.domain.models import OutputChunk, Task, TaskStatus
from core.errors import ConflictError, NotFoundError, PayloadTooLargeError, StaleWriteError, ValidationError
from core.services import task_view
from core.services.context import Context

# Chunks read per store call while catching up.
PAGE = 100
# What an SSE client waits before reconnecting (ms), sent with each bounded response.
RETRY_MS = 1000
# A comment line keeps an idle connection from being closed by proxies on one machine.
KEEPALIVE_S = 15.0
_CAS_ROUNDS = 5


def append(ctx: Context, principal: Principal, task_id: str, data: Any) -> OutputChunk:
    """Store one chunk of a PROCESSING task's output (its callback token, its server's
    service token, or an admin). 413 past the chunk or task limits; 409 once it is not
    running (or the token is for another attempt)."""
    encoded = msgspec.json.encode(data)
    limits = ctx.config
    if len(encoded) > limits.output_chunk_max_bytes:
        raise PayloadTooLargeError(
            f"Output chunk is {len(encoded)} bytes; the limit is {limits.output_chunk_max_bytes}"
        )
    task = ctx.store.get_task(task_id)
    for _ in range(_CAS_ROUNDS):
        if task is None:
            raise NotFoundError(f"Task not found: {task_id}")
        auth.check_callback(principal, task)
        if task.status is not TaskStatus.PROCESSING:
            raise ConflictError(f"Task is {task.status.value}: output is accepted while it is PROCESSING")
        if task.output_chunks >= limits.output_task_max_chunks:
            raise PayloadTooLargeError(
                f"Task has {task.output_chunks} output chunks; the limit is {limits.output_task_max_chunks}"
            )
        if task.output_bytes + len(encoded) > limits.output_task_max_bytes:
            raise PayloadTooLargeError(
                f"Task output would be {task.output_bytes + len(encoded)} bytes; the limit is"
                f" {limits.output_task_max_bytes}"
            )
        now = ctx.now()
        chunk = OutputChunk(
            task_id=task.id,
            index=task.output_chunks,
            data=data,
            attempt=task.attempts,
            created_at=now,
            expires_at=chunk_expiry_s(ctx, task, now),
        )
        try:
            ctx.store.append_output(task, chunk, len(encoded))
        except StaleWriteError as exc:
            # Another chunk got there first (same attempt: try the next index), or the task
            # moved on (the next round says why).
            task = exc.current if isinstance(exc.current, Task) else None
            continue
        ctx.events.publish_output(chunk)
        return chunk
    raise ConflictError("Task output changed while appending; try again")


def chunk_expiry_s(ctx: Context, task: Task, now: int) -> int:
    """No earlier than the task's own expiry: it finishes by its deadline, then is kept
    TASK_TTL_DAYS (one machine also drops a task's chunks with the task)."""
    ends = max(now, task.deadline or now)
    return ends // 1000 + ctx.config.task_ttl_days * 86_400


def last_event_id(header: str | None) -> int:
    """The index of the last chunk the reader has (-1: none yet)."""
    if header is None or header.strip() == "":
        return -1
    text = header.strip()
    if not text.isdigit() or len(text) > 9:
        raise ValidationError("Last-Event-ID must be the id of an output event (a chunk index)")
    return int(text)


def readable_task(ctx: Context, principal: Principal, task_id: str) -> Task:
    """The owner's or an admin's (a backend reads nothing here)."""
    return auth.followed_task(principal, ctx.store.get_task(task_id), task_id)


def event(kind: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: ".encode() + msgspec.json.encode(data) + b"\n\n"


async def events(ctx: Context, task: Task, after: int) -> AsyncIterator[bytes]:
    """The task's events from chunk `after` + 1: `status` (now, then on each change),
    `output`, and `done` with the finished task, after which it ends. Where streams cannot
    stay open it also ends after STREAM_WAIT_S, having sent `retry:` first."""
    bounded = not ctx.events.streams_stay_open
    deadline = time.monotonic() + ctx.config.stream_wait_ms / 1000
    if bounded:
        yield f"retry: {RETRY_MS}\n\n".encode()
    if ctx.events.closing:
        return
    watch = ctx.events.watch(task.id)
    shown: tuple[Any, ...] | None = None
    try:
        while True:
            watch.clear()  # before reading: a write after the read wakes the wait below
            current = ctx.store.get_task(task.id)
            if current is None:  # expired while followed
                return
            state = (current.status, current.progress, current.message, current.updated_at, current.attempts)
            if state != shown and not current.status.is_terminal:
                shown = state
                yield event("status", task_view.describe(ctx, current))  # as GET shows it
            while True:
                chunks = ctx.store.task_output(task.id, after=after, limit=PAGE)
                for chunk in chunks:
                    after = chunk.index
                    yield event("output", chunk.to_api(), chunk.index)
                if len(chunks) < PAGE:
                    break
            if current.status.is_terminal:
                yield event("done", task_view.describe(ctx, current))
                return
            left = deadline - time.monotonic()
            if bounded and left <= 0:
                return
            wait = min(left, KEEPALIVE_S) if bounded else KEEPALIVE_S
            started = time.monotonic()
            await watch.wait(wait)
            if ctx.events.closing:  # the server stops: the client reconnects with Last-Event-ID
                return
            if not bounded and time.monotonic() - started >= KEEPALIVE_S:
                yield b": keep-alive\n\n"
    finally:
        watch.close()

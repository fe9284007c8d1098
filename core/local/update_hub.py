"""One machine: task writes fanned out to the WebSocket connections following them.

The hub is a TaskEvents listener (of task writes and of output chunks), so every write (create, dispatch, progress, finish, requeue,
retry, cancel) reaches it synchronously, in the order the writes were made. It never waits:
each connection has a bounded outbox that its own writer drains, and a connection whose
outbox overflows (a client that stopped reading) is marked and dropped by its handler, so a
slow client can never hold up dispatch or another client.

Writes, subscriptions and outboxes all live on the server's event loop thread, so a subscribe
reads the task and starts following it with no write in between: the snapshot comes first and
no change is missed. A write made on another thread reaches the outbox through the loop.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from core.domain.auth import Principal
from core.domain.models import OutputChunk, Task, TaskStatus
from core.errors import ValidationError
from core.services import updates
from core.services.context import Context

# What a connection may have waiting before it counts as not reading: messages, and bytes (a
# finished task's message carries its result, up to a request body's 256 KiB).
OUTBOX_MESSAGES = 256
OUTBOX_BYTES = 1 << 20


class Follower:
    """One connection: who it is, what it follows, and its outbox of encoded messages."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.loop = asyncio.get_running_loop()
        self.overflowed = asyncio.Event()
        self.following: set[str] = set()
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX_MESSAGES)
        self._queued_bytes = 0

    async def next(self) -> bytes:
        """The next message to send, oldest first."""
        message = await self._outbox.get()
        self._queued_bytes -= len(message)
        return message

    def offer(self, message: bytes) -> None:
        """Queue `message` without waiting; a full outbox marks the connection overflowed."""
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._put(message)
        else:
            self.loop.call_soon_threadsafe(self._put, message)

    def _put(self, message: bytes) -> None:
        if self.overflowed.is_set():
            return
        if self._queued_bytes + len(message) > OUTBOX_BYTES and self._queued_bytes:
            self.overflowed.set()
            return
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed.set()
            return
        self._queued_bytes += len(message)


class UpdateHub:
    def __init__(self) -> None:
        self._followers: dict[str, set[Follower]] = defaultdict(set)

    def __call__(self, task: Task, previous: TaskStatus | None) -> None:
        """The TaskEvents listener: `task` was just written."""
        followers = self._followers.get(task.id)
        if not followers:
            return
        message = updates.task_message(task)
        if task.status.is_terminal:  # its last message: nothing more is sent for it
            del self._followers[task.id]
            for follower in followers:
                follower.following.discard(task.id)
        for follower in list(followers):
            follower.offer(message)

    def on_output(self, chunk: OutputChunk) -> None:
        """The TaskEvents output listener: a chunk of `chunk.task_id`'s output was stored."""
        followers = self._followers.get(chunk.task_id)
        if not followers:
            return
        message = updates.output_message(chunk)
        for follower in list(followers):
            follower.offer(message)

    def subscribe(self, ctx: Context, follower: Follower, task_id: str) -> None:
        """Send the task as it stands, then follow it unless it is finished. 'Not found' for a
        task the principal may not follow, as for an unknown one."""
        if task_id not in follower.following and len(follower.following) >= updates.MAX_SUBSCRIPTIONS:
            raise ValidationError(
                f"A connection follows at most {updates.MAX_SUBSCRIPTIONS} tasks; unsubscribe from one first"
            )
        task = updates.current_task(ctx, follower.principal, task_id)
        follower.offer(updates.snapshot_message(ctx, task))
        if not task.status.is_terminal:
            self._followers[task_id].add(follower)
            follower.following.add(task_id)

    def unsubscribe(self, follower: Follower, task_id: str) -> None:
        follower.following.discard(task_id)
        self._discard(follower, task_id)

    def drop(self, follower: Follower) -> None:
        """The connection is gone: forget everything it followed."""
        for task_id in follower.following:
            self._discard(follower, task_id)
        follower.following.clear()

    def followers(self, task_id: str) -> int:
        return len(self._followers.get(task_id, ()))

    def _discard(self, follower: Follower, task_id: str) -> None:
        followers = self._followers.get(task_id)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._followers[task_id]

"""The one-machine update hub, driven by the task services themselves on a SQLite store: what a
follower's outbox holds after each write, a finished task's last message, a follower that
stops reading, and writes announced from another thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from core.config import Config
from core.domain import auth
from core.domain.schemas import CreateTask
from core.errors import NotFoundError, ValidationError
from core.local import update_hub
from core.local.events import LocalEvents
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.local.update_hub import Follower, UpdateHub
from core.services import tasks, updates
from core.services.context import Context

pytestmark = pytest.mark.anyio

ALICE = auth.Principal(sub="alice", roles=frozenset({"user"}))
BOB = auth.Principal(sub="bob", roles=frozenset({"user"}))
ADMIN = auth.Principal(sub="root", roles=frozenset({"admin"}))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    store = SqliteStore(str(tmp_path / "hub.db"))
    context = Context(
        store=store, queue=CallbackQueue(), config=Config(jwt_secret="s" * 32), events=LocalEvents()
    )
    yield context
    store.close()


@pytest.fixture
def hub(ctx: Context) -> UpdateHub:
    found = UpdateHub()
    ctx.events.listeners.append(found)
    return found


def create(ctx: Context, principal: auth.Principal = ALICE) -> str:
    body = CreateTask(type="text", priority=1, payload={"prompt": "hi"})
    return tasks.create_task(ctx, principal, body).id


def drain(follower: Follower) -> list[dict[str, object]]:
    messages = []
    while not follower._outbox.empty():
        messages.append(msgspec.json.decode(follower._outbox.get_nowait()))
    return messages


async def test_the_snapshot_then_each_write_then_nothing_after_the_end(ctx: Context, hub: UpdateHub) -> None:
    task_id = create(ctx)
    follower = Follower(ALICE)
    hub.subscribe(ctx, follower, task_id)
    tasks.cancel_task(ctx, ALICE, task_id)
    tasks.retry_task(ctx, ALICE, task_id)  # after the end: not sent
    statuses = [m["task"]["status"] for m in drain(follower)]  # type: ignore[index]
    assert statuses == ["PENDING", "CANCELLED"]
    assert hub.followers(task_id) == 0 and follower.following == set()


async def test_only_the_owner_or_an_admin_may_follow(ctx: Context, hub: UpdateHub) -> None:
    task_id = create(ctx)
    with pytest.raises(NotFoundError, match=f"Task not found: {task_id}"):
        hub.subscribe(ctx, Follower(BOB), task_id)
    hub.subscribe(ctx, Follower(ADMIN), task_id)
    assert hub.followers(task_id) == 1


async def test_a_follower_that_does_not_read_overflows_and_gets_nothing_more(
    ctx: Context, hub: UpdateHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(update_hub, "OUTBOX_MESSAGES", 3)
    task_id = create(ctx)
    slow, fine = Follower(ALICE), Follower(ALICE)
    hub.subscribe(ctx, slow, task_id)
    for _ in range(3):
        hub.subscribe(ctx, fine, task_id)  # each subscribe sends the snapshot again
        drain(fine)
        hub.subscribe(ctx, slow, task_id)
    assert slow.overflowed.is_set() and not fine.overflowed.is_set()
    assert len(drain(slow)) == 3


async def test_the_byte_limit_counts_large_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(update_hub, "OUTBOX_BYTES", 100)
    follower = Follower(ALICE)
    follower.offer(b"x" * 150)  # one message always fits, however large
    assert not follower.overflowed.is_set()
    assert await follower.next() == b"x" * 150
    follower.offer(b"y" * 60)
    follower.offer(b"z" * 60)
    assert follower.overflowed.is_set()


async def test_a_write_on_another_thread_reaches_the_outbox_through_the_loop() -> None:
    follower = Follower(ALICE)
    thread = threading.Thread(target=follower.offer, args=(b"from-a-thread",))
    thread.start()
    thread.join()
    assert await asyncio.wait_for(follower.next(), 2) == b"from-a-thread"


async def test_a_connection_follows_at_most_max_subscriptions(
    ctx: Context, hub: UpdateHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(updates, "MAX_SUBSCRIPTIONS", 2)
    follower = Follower(ALICE)
    first, second, third = create(ctx), create(ctx), create(ctx)
    hub.subscribe(ctx, follower, first)
    hub.subscribe(ctx, follower, second)
    hub.subscribe(ctx, follower, first)  # again: still two
    with pytest.raises(ValidationError, match="at most 2 tasks"):
        hub.subscribe(ctx, follower, third)
    hub.unsubscribe(follower, first)
    hub.subscribe(ctx, follower, third)
    hub.drop(follower)
    assert [hub.followers(t) for t in (first, second, third)] == [0, 0, 0]


def test_a_subscribe_after_the_token_expired_is_refused() -> None:
    """The close at `exp` races a subscribe already on its way: the subscribe loses."""
    from core.domain import auth as _auth
    from core.errors import UnauthorizedError
    from core.services import updates

    principal = _auth.Principal(sub="alice", roles=frozenset({"user"}), expires_s=1_000)
    updates.check_live(principal, 999_999)  # one millisecond before
    with pytest.raises(UnauthorizedError, match="Token expired"):
        updates.check_live(principal, 1_000_000)
    assert updates.seconds_left(principal, 998_500) == 1.5
    assert updates.seconds_left(_auth.Principal(sub="a", roles=frozenset({"user"})), 0) is None

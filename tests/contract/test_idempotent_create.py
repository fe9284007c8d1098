"""Idempotency-Key on task creation, through the service (core.services.idempotency) on each store."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from core.config import Config
from core.domain.auth import Principal
from core.domain.models import Task
from core.domain.schemas import CreateTask
from core.errors import ConflictError, ValidationError
from core.ports.queue import TaskQueue
from core.ports.storage import IdempotencyRecord, Store
from core.services.context import Context
from core.services.idempotency import body_hash, check_key, create_task_once, scoped_key

from .conftest import StoreFactory
from .factories import NOW, run_concurrently, split, unique_id

DAY_MS = 86_400_000


class RecordingQueue(TaskQueue):
    def __init__(self) -> None:
        self.enqueued: list[str] = []

    def enqueue(self, task_id: str, *, delay_ms: int = 0, snapshot: Task | None = None) -> None:
        self.enqueued.append(task_id)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


def context(store: Store, clock: Clock | None = None) -> Context:
    return Context(store=store, queue=RecordingQueue(), config=Config(jwt_secret="s"), clock=clock or Clock())


def user(sub: str | None = None) -> Principal:
    return Principal(sub=sub or unique_id("user"), roles=frozenset({"user"}))


def body(**fields: Any) -> CreateTask:
    return msgspec.convert({"type": "video", "priority": 1, "payload": {"n": 1}, **fields}, CreateTask)


def test_the_same_key_and_body_return_the_first_task(store: Store) -> None:
    # GIVEN a task created with a key
    ctx, alice = context(store), user()
    first, replayed = create_task_once(ctx, alice, body(), "order-1")
    assert replayed is False

    # WHEN the same request comes again
    again, replayed = create_task_once(ctx, alice, body(), "order-1")

    # THEN it is the first task, and no other was stored or enqueued
    assert replayed is True
    assert again.id == first.id
    assert [t.id for t in store.tasks_by_owner(alice.sub)] == [first.id]
    assert isinstance(ctx.queue, RecordingQueue) and ctx.queue.enqueued == [first.id]


def test_the_same_body_spelled_in_another_key_order_is_the_same_request(store: Store) -> None:
    ctx, alice = context(store), user()
    first, _ = create_task_once(ctx, alice, body(payload={"a": 1, "b": 2}), "k")
    again, replayed = create_task_once(ctx, alice, body(payload={"b": 2, "a": 1}), "k")
    assert (again.id, replayed) == (first.id, True)


def test_the_same_key_with_another_body_is_a_conflict_and_stores_nothing(store: Store) -> None:
    ctx, alice = context(store), user()
    first, _ = create_task_once(ctx, alice, body(), "order-2")

    with pytest.raises(ConflictError, match="different request body"):
        create_task_once(ctx, alice, body(priority=9), "order-2")

    assert [t.id for t in store.tasks_by_owner(alice.sub)] == [first.id]


def test_keys_are_scoped_per_principal(store: Store) -> None:
    # GIVEN alice's key; WHEN bob uses the same key, with another body
    ctx, alice, bob = context(store), user(), user()
    mine, _ = create_task_once(ctx, alice, body(), "shared-key")
    theirs, replayed = create_task_once(ctx, bob, body(priority=5), "shared-key")

    # THEN bob gets a task of his own, neither a 409 nor alice's task
    assert replayed is False
    assert theirs.id != mine.id and theirs.owner == bob.sub
    assert scoped_key(alice, "k") != scoped_key(bob, "k")


def test_a_key_past_24_hours_creates_a_new_task(store: Store) -> None:
    clock = Clock()
    ctx, alice = context(store, clock), user()
    first, _ = create_task_once(ctx, alice, body(), "daily")

    clock.now += DAY_MS - 1000
    assert create_task_once(ctx, alice, body(), "daily")[0].id == first.id
    clock.now += 1000
    later, replayed = create_task_once(ctx, alice, body(), "daily")

    assert replayed is False and later.id != first.id


def test_a_claim_left_without_its_task_is_completed_by_the_retry(store: Store) -> None:
    # GIVEN a key claimed for a task id by a request that died before writing the task
    ctx, alice, request = context(store), user(), body()
    claimed = IdempotencyRecord(
        key=scoped_key(alice, "crash"),
        body_hash=body_hash(request),
        task_id="task_claimed1",
        expires_at=NOW // 1000 + 3600,
    )
    assert store.put_idempotency(claimed, now_s=NOW // 1000) is None

    # WHEN the client retries
    task, replayed = create_task_once(ctx, alice, request, "crash")

    # THEN the task is created under the claimed id (by this request: not a replay), once only
    assert task.id == "task_claimed1" and replayed is False
    assert store.get_task("task_claimed1") is not None
    assert create_task_once(ctx, alice, request, "crash")[0].id == "task_claimed1"
    assert [t.id for t in store.tasks_by_owner(alice.sub)] == ["task_claimed1"]


def test_concurrent_duplicates_create_exactly_one_task(store: Store, open_store: StoreFactory) -> None:
    # GIVEN 20 clients (each its own process, so its own store) sending the same keyed request
    n, alice = 20, user()
    contexts = [context(open_store()) for _ in range(n)]

    # WHEN they all send it at once
    outcomes = run_concurrently(n, lambda i: create_task_once(contexts[i], alice, body(), "burst"))

    # THEN all get the same task, exactly one of them created it, and one task is stored
    (wins,) = split(outcomes)
    assert len(wins) == n
    ids = {o.value[0].id for o in wins}
    assert len(ids) == 1
    assert sum(1 for o in wins if o.value[1] is False) == 1
    assert [t.id for t in store.tasks_by_owner(alice.sub)] == list(ids)


@pytest.mark.parametrize(
    ("value", "reason"),
    [("", "empty"), ("x" * 256, "longer than 255"), ("tab\there", "printable"), ("naïve", "printable")],
)
def test_unusable_keys_are_refused(value: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        check_key(value)


def test_usable_keys_pass() -> None:
    assert check_key(None) is None
    assert check_key("x" * 255) == "x" * 255
    assert check_key("order 42/retry:1") == "order 42/retry:1"

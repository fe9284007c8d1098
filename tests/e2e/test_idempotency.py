"""Idempotency-Key on POST /api/task over HTTP, against both deployments."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .harness import EXAMPLE_TASK, HELD, Api, unique


def body(**fields: Any) -> dict[str, Any]:
    return {**EXAMPLE_TASK, "capabilities": ["video", HELD], **fields}


def test_a_retried_post_returns_the_first_task(api: Api) -> None:
    sub = unique("user")
    owner, key = api.token("user", sub), {"Idempotency-Key": unique("order")}
    first = api.post("/api/task", json=body(), token=owner, headers=key)
    again = api.post("/api/task", json=body(), token=owner, headers=key)

    created, replayed = first.ok(), again.ok()
    assert replayed == {**created, "updatedAt": replayed["updatedAt"]}
    assert set(replayed) == {"id", "status", "createdAt", "updatedAt"}
    assert again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    assert [t.id for t in api.store.tasks_by_owner(sub)] == [created["id"]]


def test_the_same_key_with_another_body_is_409_naming_the_reason(api: Api) -> None:
    sub = unique("user")
    owner, key = api.token("user", sub), {"Idempotency-Key": unique("order")}
    api.post("/api/task", json=body(), token=owner, headers=key).ok()
    api.post("/api/task", json=body(priority=9), token=owner, headers=key).error(
        409, "Conflict", mentions=("Idempotency-Key", "different request body")
    )
    assert len(api.store.tasks_by_owner(sub)) == 1


def test_another_user_with_the_same_key_gets_a_task_of_their_own(api: Api) -> None:
    key = {"Idempotency-Key": unique("shared")}
    mine = api.post("/api/task", json=body(), token=api.user(), headers=key).ok()
    theirs = api.post("/api/task", json=body(), token=api.user(), headers=key)
    assert theirs.ok()["id"] != mine["id"] and "idempotent-replayed" not in theirs.headers


def test_concurrent_duplicates_create_one_task(api: Api) -> None:
    sub = unique("user")
    owner, key = api.token("user", sub), {"Idempotency-Key": unique("burst")}
    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(
            pool.map(lambda _: api.post("/api/task", json=body(), token=owner, headers=key), range(10))
        )
    ids = {reply.ok()["id"] for reply in replies}
    assert len(ids) == 1
    assert sum(1 for r in replies if "idempotent-replayed" not in r.headers) == 1
    assert [t.id for t in api.store.tasks_by_owner(sub)] == list(ids)


@pytest.mark.parametrize(
    ("value", "reason"),
    [("", "empty"), ("x" * 256, "255"), ("a\tb", "printable"), (b"caf\xc3\xa9", "printable")],
    ids=["empty", "long", "tab", "utf8"],
)
def test_an_unusable_key_is_400_and_creates_nothing(api: Api, value: str | bytes, reason: str) -> None:
    sub = unique("user")
    headers: Any = {"Idempotency-Key": value}
    reply = api.post("/api/task", token=api.token("user", sub), json=body(), headers=headers)
    reply.error(400, "Invalid request", mentions=("Idempotency-Key", reason))
    assert api.store.tasks_by_owner(sub) == []

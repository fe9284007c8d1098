"""Webhook deliveries in the store: put once, listed per task, due in order, claimed and
settled by compare-and-set on their attempt count."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from core.domain.models import DeliveryAttempt, DeliveryState, TaskStatus, WebhookDelivery
from core.errors import StaleWriteError
from core.ports.storage import Store

from .conftest import StoreFactory
from .factories import NOW, make_server, make_task, run_concurrently, split, unique_id


def make_delivery(**overrides: Any) -> WebhookDelivery:
    fields: dict[str, Any] = {
        "task_id": unique_id("task"),
        "round": 0,
        "url": "http://127.0.0.1:9/hook",
        "task_status": TaskStatus.COMPLETED,
        "body": '{"id": "t", "result": {"x": 1.5}}',
        "next_attempt_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
        "expires_at": NOW // 1000 + 86_400,
    }
    fields.update(overrides)
    return WebhookDelivery(**fields)


def test_a_delivery_round_trips_and_is_put_once(store: Store) -> None:
    delivery = make_delivery()
    store.put_delivery(delivery)
    assert store.deliveries_of_task(delivery.task_id) == [delivery]
    with pytest.raises(StaleWriteError):
        store.put_delivery(make_delivery(task_id=delivery.task_id, url="http://other/"))
    assert store.deliveries_of_task(delivery.task_id) == [delivery]


def test_deliveries_of_a_task_are_listed_by_round_and_no_others(store: Store) -> None:
    task_id = unique_id("task")
    for round_ in (2, 0, 1):
        store.put_delivery(make_delivery(task_id=task_id, round=round_))
    store.put_delivery(make_delivery())
    assert [d.round for d in store.deliveries_of_task(task_id)] == [0, 1, 2]
    assert store.deliveries_of_task("task_none") == []


def test_due_deliveries_are_pending_ones_at_or_before_now_earliest_first(store: Store) -> None:
    late = make_delivery(next_attempt_at=NOW + 10)
    early = make_delivery(next_attempt_at=NOW - 10)
    future = make_delivery(next_attempt_at=NOW + 11)
    done = make_delivery(next_attempt_at=NOW - 20, state=DeliveryState.DELIVERED)
    for delivery in (late, early, future, done):
        store.put_delivery(delivery)
    due = store.due_deliveries(NOW + 10, 10)
    assert [d.task_id for d in due] == [early.task_id, late.task_id]
    assert [d.task_id for d in store.due_deliveries(NOW + 10, 1)] == [early.task_id]


def test_a_claim_then_an_outcome_move_the_delivery_out_of_the_due_list(store: Store) -> None:
    delivery = make_delivery()
    store.put_delivery(delivery)

    claimed = store.update_delivery(
        delivery, {"attempts": 1, "next_attempt_at": NOW + 15_000, "updated_at": NOW}, due_by=NOW
    )
    assert (claimed.attempts, claimed.next_attempt_at) == (1, NOW + 15_000)
    assert store.due_deliveries(NOW, 10) == []

    entry = DeliveryAttempt(at=NOW, duration_ms=12, status_code=200)
    settled = store.update_delivery(claimed, {"state": DeliveryState.DELIVERED, "log": [entry]})
    assert settled.state is DeliveryState.DELIVERED and settled.log == [entry]
    assert store.deliveries_of_task(delivery.task_id) == [settled]
    assert store.due_deliveries(NOW + 10**9, 10) == []


def test_stale_claims_and_early_claims_fail_and_change_nothing(store: Store) -> None:
    delivery = make_delivery(next_attempt_at=NOW + 5)
    store.put_delivery(delivery)
    with pytest.raises(StaleWriteError):  # not due yet
        store.update_delivery(delivery, {"attempts": 1}, due_by=NOW)
    store.update_delivery(delivery, {"attempts": 1}, due_by=NOW + 5)
    with pytest.raises(StaleWriteError) as lost:  # another sender already claimed attempt 1
        store.update_delivery(delivery, {"attempts": 1}, due_by=NOW + 5)
    assert isinstance(lost.value.current, WebhookDelivery) and lost.value.current.attempts == 1


def test_concurrent_claims_of_one_delivery_have_one_winner(store: Store, open_store: StoreFactory) -> None:
    delivery = make_delivery()
    store.put_delivery(delivery)
    stores = [open_store() for _ in range(12)]

    outcomes = run_concurrently(
        12, lambda i: stores[i].update_delivery(delivery, {"attempts": 1, "updated_at": NOW + i}, due_by=NOW)
    )

    wins, losses = split(outcomes, StaleWriteError)
    assert len(wins) == 1 and len(losses) == 11
    assert store.deliveries_of_task(delivery.task_id)[0].updated_at == NOW + wins[0].index


# -- stored with the task's finishing write -----------------------------------------------


def test_update_task_stores_the_delivery_with_the_transition(store: Store) -> None:
    task = make_task(webhook="http://127.0.0.1:9/hook")
    store.put_task(task)
    delivery = make_delivery(task_id=task.id, task_status=TaskStatus.CANCELLED)

    written = store.update_task(
        task.id,
        {"status": TaskStatus.CANCELLED, "updated_at": NOW + 1},
        from_status={TaskStatus.PENDING},
        delivery=delivery,
    )

    assert written.status is TaskStatus.CANCELLED and written.updated_at == NOW + 1
    assert store.deliveries_of_task(task.id) == [delivery]
    assert [d.task_id for d in store.due_deliveries(NOW, 100) if d.task_id == task.id] == [task.id]


def test_a_stale_update_task_stores_no_delivery(store: Store) -> None:
    task = make_task(status=TaskStatus.COMPLETED)
    store.put_task(task)
    with pytest.raises(StaleWriteError) as stale:
        store.update_task(
            task.id,
            {"status": TaskStatus.CANCELLED},
            from_status={TaskStatus.PENDING},
            delivery=make_delivery(task_id=task.id),
        )
    assert isinstance(stale.value.current, type(task)) and stale.value.current.status is TaskStatus.COMPLETED
    assert store.deliveries_of_task(task.id) == []


def _processing(store: Store, **server: Any) -> tuple[Any, Any]:
    srv = make_server(**server)
    store.put_server(srv)
    task = make_task(webhook="http://127.0.0.1:9/hook")
    store.put_task(task)
    changes = {"status": TaskStatus.PROCESSING, "server_id": srv.id, "attempts": 1, "started_at": NOW}
    return srv, store.claim_task(task, changes)


@pytest.mark.parametrize("server_gone", [False, True], ids=["server", "server-unregistered"])
def test_release_task_stores_the_delivery_with_the_transition(store: Store, server_gone: bool) -> None:
    srv, running = _processing(store)
    if server_gone:
        store.delete_server(srv.id)
    delivery = make_delivery(task_id=running.id, body="x" * 20_000)

    store.release_task(running, {"status": TaskStatus.COMPLETED, "result": {"ok": 1}}, delivery=delivery)

    current = store.get_task(running.id)
    assert current is not None and current.status is TaskStatus.COMPLETED
    assert store.deliveries_of_task(running.id) == [delivery]
    if not server_gone:
        server = store.get_server(srv.id)
        assert server is not None and server.active_tasks == 0


def test_a_stale_release_stores_no_delivery(store: Store) -> None:
    _, running = _processing(store)
    store.release_task(running, {"status": TaskStatus.FAILED})
    with pytest.raises(StaleWriteError):
        store.release_task(
            running, {"status": TaskStatus.COMPLETED}, delivery=make_delivery(task_id=running.id)
        )
    assert store.deliveries_of_task(running.id) == []


# -- the service: bodies too large to keep on the delivery --------------------------------


def test_a_large_body_is_read_from_the_task_and_a_retried_task_ends_the_delivery(store: Store) -> None:
    from core.config import Config
    from core.local.queue import CallbackQueue
    from core.services import webhook_delivery
    from core.services.context import Context

    ctx = Context(store=store, queue=CallbackQueue(), config=Config(jwt_secret="s"), clock=lambda: NOW)
    _, running = _processing(store)
    finished = {"status": TaskStatus.COMPLETED, "result": {"blob": "x" * 40_000}, "completed_at": NOW}
    delivery = webhook_delivery.for_finish(ctx, msgspec.structs.replace(running, **finished))
    assert delivery is not None and delivery.body == ""
    done = store.release_task(running, finished, delivery=delivery)

    # WHEN it is sent, the body is the task as GET shows it
    claimed = webhook_delivery.claim(ctx, store.deliveries_of_task(done.id)[0])
    assert claimed is not None
    request = webhook_delivery.request(ctx, claimed)
    assert isinstance(request, webhook_delivery.WebhookRequest)
    assert msgspec.json.decode(request.body) == msgspec.json.decode(msgspec.json.encode(done.to_api()))

    # AND once the task is retried, that round's delivery ends without a POST
    store.update_task(
        done.id, {"status": TaskStatus.PENDING, "retries": 1}, from_status={TaskStatus.COMPLETED}
    )
    outcome = webhook_delivery.request(ctx, claimed)
    assert isinstance(outcome, webhook_delivery.WebhookOutcome) and not outcome.retryable
    settled = webhook_delivery.settle(ctx, claimed, outcome)
    assert settled is not None and settled.state is DeliveryState.FAILED
    assert settled.log[-1].error == webhook_delivery.SUPERSEDED


def test_a_lost_attempt_is_recorded_and_a_lost_last_attempt_ends_the_delivery(store: Store) -> None:
    from core.config import Config
    from core.local.queue import CallbackQueue
    from core.services import webhook_delivery
    from core.services.context import Context

    ctx = Context(
        store=store,
        queue=CallbackQueue(),
        config=Config(jwt_secret="s", webhook_max_attempts=2),
        clock=lambda: NOW,
    )
    # GIVEN a delivery whose first attempt was claimed and never settled (its lease is over)
    lost = make_delivery(attempts=1, next_attempt_at=NOW - 1)
    store.put_delivery(lost)

    # WHEN it is claimed again, the lost attempt is recorded and attempt 2 is made
    second = webhook_delivery.claim(ctx, lost)
    assert second is not None and second.attempts == 2
    assert [entry.error for entry in second.log] == [webhook_delivery.LOST]

    # AND when attempt 2 is lost too, the next claim ends the delivery instead of a third POST
    expired = store.update_delivery(second, {"next_attempt_at": NOW - 1})
    assert webhook_delivery.claim(ctx, expired) is None
    (ended,) = store.deliveries_of_task(lost.task_id)
    assert ended.state is DeliveryState.FAILED and ended.attempts == 2
    assert [entry.error for entry in ended.log] == [webhook_delivery.LOST, webhook_delivery.LOST]

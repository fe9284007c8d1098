"""The webhook and health loops of core.services.work on a real store, a fake clock and a
scripted transport: an attempt is claimed once, signed, recorded, re-armed after a retryable
failure, and never recorded by a sender that lost its lease; a health check is recorded."""

from __future__ import annotations

import msgspec

from core.domain.models import DeliveryState, ServerStatus, Task, TaskStatus, WebhookDelivery
from core.domain.protocol import Kind, Outcome
from core.domain.schemas import CreateTask
from core.domain.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from core.services import sweeper, tasks, webhook_delivery, work
from core.services.context import Context
from core.services.dispatch import Assignment
from core.services.webhook_delivery import WebhookOutcome
from tests.unit.services.conftest import ALICE, add_server
from tests.unit.services.fakes import FakeClock, RecordingQueue, ScriptedTransport

# A public receiver: webhooks refuse loopback unless allowed; the scripted transport never calls it.
HOOK = "https://hooks.example.com/hook"


def finished_with_webhook(ctx: Context, transport: ScriptedTransport) -> Task:
    """A task with a webhook, completed inline by its backend (its delivery stored with it)."""
    add_server(ctx, "gpu-1")
    task = tasks.create_task(ctx, ALICE, CreateTask(type="image", priority=5, payload={}, webhook=HOOK))
    started: list[Assignment] = []
    work.drain(ctx, 10, started.append)
    transport.script("gpu-1", Outcome(Kind.COMPLETED, result={"ok": True}))
    work.run(work.execute(ctx, started[0]), transport)
    return task


def the_delivery(ctx: Context, task: Task) -> WebhookDelivery:
    [delivery] = ctx.store.deliveries_of_task(task.id)
    return delivery


def test_a_delivered_attempt_is_signed_and_recorded(ctx: Context, transport: ScriptedTransport) -> None:
    task = finished_with_webhook(ctx, transport)
    transport.webhook_answers.append(WebhookOutcome(204, None, 12))
    [due] = work.due_webhooks(ctx, 10)

    assert work.run(work.deliver(ctx, due), transport) is True

    [request] = transport.webhook_requests
    assert request.url == HOOK
    assert msgspec.json.decode(request.body)["status"] == TaskStatus.COMPLETED.value
    assert verify(
        ctx.webhook_secret,
        request.headers[TIMESTAMP_HEADER],
        request.body,
        request.headers[SIGNATURE_HEADER],
        now=ctx.now() // 1000,
    )
    delivery = the_delivery(ctx, task)
    assert delivery.state is DeliveryState.DELIVERED and delivery.attempts == 1
    assert [entry.status_code for entry in delivery.log] == [204]
    assert work.due_webhooks(ctx, 10) == []


def test_a_retryable_failure_is_re_armed_after_its_backoff(
    ctx: Context, transport: ScriptedTransport, queue: RecordingQueue, clock: FakeClock
) -> None:
    task = finished_with_webhook(ctx, transport)
    transport.webhook_answers += [WebhookOutcome(503, None, 5), WebhookOutcome(200, None, 5)]
    queue.webhooks.clear()
    [due] = work.due_webhooks(ctx, 10)
    work.run(work.deliver(ctx, due), transport)

    pending = the_delivery(ctx, task)
    assert pending.state is DeliveryState.PENDING
    delay = pending.next_attempt_at - clock.now
    assert queue.webhooks == [(task.id, 0, delay)]
    assert 2_500 <= delay <= 5_000  # WEBHOOK_RETRY_BASE 5 s, jittered down to half
    assert work.due_webhooks(ctx, 10) == []

    clock.advance(delay)
    [again] = work.due_webhooks(ctx, 10)
    assert work.run(work.deliver(ctx, again), transport) is True
    delivered = the_delivery(ctx, task)
    assert delivered.state is DeliveryState.DELIVERED
    assert [entry.status_code for entry in delivered.log] == [503, 200]


def test_a_client_error_fails_the_delivery_without_a_retry(
    ctx: Context, transport: ScriptedTransport, queue: RecordingQueue
) -> None:
    task = finished_with_webhook(ctx, transport)
    transport.webhook_answers.append(WebhookOutcome(404, None, 5))
    queue.webhooks.clear()
    [due] = work.due_webhooks(ctx, 10)
    work.run(work.deliver(ctx, due), transport)

    assert the_delivery(ctx, task).state is DeliveryState.FAILED
    assert queue.webhooks == []


def test_two_senders_of_one_due_delivery_post_it_once(ctx: Context, transport: ScriptedTransport) -> None:
    task = finished_with_webhook(ctx, transport)
    transport.webhook_answers.append(WebhookOutcome(200, None, 5))
    [seen_by_first] = work.due_webhooks(ctx, 10)
    [seen_by_second] = work.due_webhooks(ctx, 10)

    assert work.run(work.deliver(ctx, seen_by_first), transport) is True
    assert work.run(work.deliver(ctx, seen_by_second), transport) is False

    assert [kind for kind, _ in transport.calls].count("webhook") == 1
    assert the_delivery(ctx, task).attempts == 1


def test_a_sender_that_lost_its_lease_records_nothing(
    ctx: Context, transport: ScriptedTransport, clock: FakeClock
) -> None:
    task = finished_with_webhook(ctx, transport)
    [due] = work.due_webhooks(ctx, 10)
    slow = webhook_delivery.claim(ctx, due)
    assert slow is not None
    job = work.send(ctx, slow)
    assert isinstance(next(job), webhook_delivery.WebhookRequest)  # the slow POST is on the wire

    # Its lease runs out; another sender takes the attempt over and delivers it.
    clock.advance(ctx.config.webhook_timeout_ms + webhook_delivery.LEASE_MARGIN_MS)
    [taken_over] = work.due_webhooks(ctx, 10)
    transport.webhook_answers.append(WebhookOutcome(200, None, 5))
    assert work.run(work.deliver(ctx, taken_over), transport) is True

    try:
        job.send(WebhookOutcome(500, None, 30_000))
    except StopIteration as done:
        assert done.value is None  # not recorded
    delivery = the_delivery(ctx, task)
    assert delivery.state is DeliveryState.DELIVERED
    assert [entry.status_code for entry in delivery.log] == [None, 200]  # the lost attempt, then ours


# -- health -----------------------------------------------------------------------------


def test_a_due_check_is_made_and_recorded(
    ctx: Context, transport: ScriptedTransport, clock: FakeClock
) -> None:
    add_server(ctx, "gpu-1")
    assert [s.id for s in sweeper.due_for_check(ctx)] == ["gpu-1"]  # a new server at once
    transport.script_health("gpu-1", (True, None))

    checked = work.run(work.check(ctx, "gpu-1"), transport)

    assert checked is not None and checked.last_check_at == clock.now
    assert checked.health_status == "healthy" and checked.status is ServerStatus.ONLINE
    assert sweeper.due_for_check(ctx) == []
    clock.advance(ctx.config.health_check_interval_ms)
    assert [s.id for s in sweeper.due_for_check(ctx)] == ["gpu-1"]


def test_failed_checks_take_a_server_offline_and_requeue_its_tasks(
    ctx: Context, transport: ScriptedTransport
) -> None:
    add_server(ctx, "gpu-1")
    task = tasks.create_task(ctx, ALICE, CreateTask(type="image", priority=5, payload={}))
    started: list[Assignment] = []
    work.drain(ctx, 10, started.append)
    transport.script("gpu-1", Outcome(Kind.ACCEPTED))
    work.run(work.execute(ctx, started[0]), transport)
    transport.script_health("gpu-1", *[(False, "HTTP 500")] * 3)

    statuses = [work.run(work.check(ctx, "gpu-1"), transport) for _ in range(3)]

    assert [s.status if s else None for s in statuses] == [
        ServerStatus.DEGRADED,
        ServerStatus.DEGRADED,
        ServerStatus.OFFLINE,
    ]
    requeued = ctx.store.get_task(task.id)
    assert requeued is not None and requeued.status is TaskStatus.PENDING
    assert "went offline" in str(requeued.error)


def test_a_check_of_a_server_gone_meanwhile_calls_nothing(ctx: Context, transport: ScriptedTransport) -> None:
    assert work.run(work.check(ctx, "gone"), transport) is None
    assert transport.calls == []

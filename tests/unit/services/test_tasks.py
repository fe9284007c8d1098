"""Task services on a real store with a fake clock: create, callbacks, retry, cancel. Bad
input and forbidden transitions are refused and change nothing."""

from __future__ import annotations

import pytest

from core.domain.auth import SERVICE, USER, Principal
from core.domain.models import TaskStatus
from core.domain.schemas import CreateTask, UpdateTask
from core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from core.services import tasks
from core.services.context import Context
from tests.unit.services.conftest import ADMIN_USER, ALICE, add_server, drain_all, submit
from tests.unit.services.fakes import FakeClock, RecordingQueue

BOB = Principal(sub="bob", roles=frozenset({USER}))


def callback_principal(task_id: str, server_id: str, attempt: int) -> Principal:
    return Principal(
        sub=f"server:{server_id}",
        roles=frozenset({SERVICE}),
        server_id=server_id,
        task_id=task_id,
        attempt=attempt,
    )


def test_a_new_task_is_pending_stored_and_announced(
    ctx: Context, queue: RecordingQueue, clock: FakeClock
) -> None:
    task = submit(ctx, priority=7, capabilities=["gpu", "gpu", "a100"])

    stored = ctx.store.get_task(task.id)
    assert stored == task
    assert task.status is TaskStatus.PENDING and task.owner == "alice"
    assert task.capabilities == ["a100", "gpu"]
    assert task.created_at == task.queued_at == clock.now
    assert queue.enqueued == [(task.id, 0)]


@pytest.mark.parametrize(
    "webhook", ["ftp://example.test/hook", "http://169.254.169.254/latest", "http://user:pw@h/x"]
)
def test_a_refused_webhook_url_stores_nothing(ctx: Context, queue: RecordingQueue, webhook: str) -> None:
    with pytest.raises(ValidationError, match="webhook"):
        submit(ctx, webhook=webhook)
    assert ctx.store.count_pending() == 0
    assert queue.enqueued == []


def test_a_server_may_not_create_tasks(ctx: Context) -> None:
    with pytest.raises(ForbiddenError):
        tasks.create_task(
            ctx, callback_principal("t", "gpu-1", 1), CreateTask(type="image", priority=1, payload={})
        )
    assert ctx.store.count_pending() == 0


def test_another_user_cannot_see_a_task(ctx: Context) -> None:
    task = submit(ctx)
    with pytest.raises(NotFoundError):
        tasks.get_task(ctx, BOB, task.id)
    assert tasks.get_task(ctx, ADMIN_USER, task.id).id == task.id


def test_progress_then_a_result_from_the_backend_finish_the_task(ctx: Context, clock: FakeClock) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    drain_all(ctx)
    backend = callback_principal(task.id, "gpu-1", 1)

    clock.advance(100)
    progressed = tasks.report(ctx, backend, task.id, UpdateTask(progress=40, message="denoising"))
    assert (
        progressed.progress == 40 and progressed.message == "denoising" and progressed.updated_at == clock.now
    )

    clock.advance(100)
    done = tasks.report(ctx, backend, task.id, UpdateTask(status="COMPLETED", result={"url": "x"}))
    assert done.status is TaskStatus.COMPLETED and done.result == {"url": "x"} and done.progress == 100
    server = ctx.store.get_server("gpu-1")
    assert server is not None and server.active_tasks == 0 and server.success_count == 1

    with pytest.raises(ConflictError, match="already COMPLETED"):
        tasks.report(ctx, backend, task.id, UpdateTask(status="FAILED", error="late"))
    after = ctx.store.get_task(task.id)
    assert after is not None and after.status is TaskStatus.COMPLETED and after.error is None


def test_a_callback_for_an_earlier_attempt_is_a_conflict(ctx: Context, clock: FakeClock) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    [first] = drain_all(ctx)
    tasks.requeue(ctx, first.task, "HTTP 503")
    drain_all(ctx)  # attempt 2

    with pytest.raises(ConflictError):
        tasks.report(ctx, callback_principal(task.id, "gpu-1", 1), task.id, UpdateTask(status="COMPLETED"))
    current = ctx.store.get_task(task.id)
    assert current is not None and current.status is TaskStatus.PROCESSING and current.attempts == 2


def test_a_report_on_a_pending_task_is_a_conflict(ctx: Context) -> None:
    task = submit(ctx)
    with pytest.raises(ConflictError, match="PENDING, not PROCESSING"):
        tasks.report(ctx, ADMIN_USER, task.id, UpdateTask(status="COMPLETED"))


def test_cancelling_a_processing_task_frees_its_slot(ctx: Context, queue: RecordingQueue) -> None:
    add_server(ctx, "gpu-1", max_concurrent=1)
    task = submit(ctx)
    drain_all(ctx)
    signals = queue.capacity_signals

    cancelled = tasks.cancel_task(ctx, ALICE, task.id)

    assert cancelled.status is TaskStatus.CANCELLED and cancelled.error == "Cancelled by alice"
    server = ctx.store.get_server("gpu-1")
    assert server is not None and server.active_tasks == 0
    assert queue.capacity_signals == signals + 1
    with pytest.raises(ConflictError, match="CANCELLED"):
        tasks.cancel_task(ctx, ALICE, task.id)


def test_only_the_owner_or_an_admin_cancels(ctx: Context) -> None:
    task = submit(ctx)
    with pytest.raises(NotFoundError):
        tasks.cancel_task(ctx, BOB, task.id)
    assert tasks.cancel_task(ctx, ADMIN_USER, task.id).status is TaskStatus.CANCELLED


def test_a_retry_gives_a_failed_task_new_attempts(ctx: Context, queue: RecordingQueue) -> None:
    add_server(ctx, "gpu-1")
    task = submit(ctx)
    [assignment] = drain_all(ctx)
    tasks.finish(ctx, assignment.task, TaskStatus.FAILED, error="boom")

    retried = tasks.retry_task(ctx, ALICE, task.id)

    assert retried.status is TaskStatus.PENDING and retried.retries == 1
    assert retried.attempt_limit == 1 + ctx.config.max_attempts
    assert retried.error is None and retried.result is None
    assert queue.enqueued[-1] == (task.id, 0)


def test_a_pending_task_cannot_be_retried(ctx: Context) -> None:
    task = submit(ctx)
    with pytest.raises(ConflictError):
        tasks.retry_task(ctx, ALICE, task.id)
    current = ctx.store.get_task(task.id)
    assert current is not None and current.retries == 0

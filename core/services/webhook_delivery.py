"""Webhook deliveries: recorded when a task with a `webhook` finishes, then POSTed at least
once, retried with backoff, each attempt recorded on the delivery.

A delivery is stored in the same atomic write that finishes its task (`for_finish`, passed to
the store by core.services.tasks), with the time of its next attempt, so it outlives the process that
finished the task: the one-machine runtime and the AWS sweeper pick up whatever is due. Every
attempt starts with a claim, a conditional write that bumps `attempts` and moves the next
attempt past a lease; only one sender wins it, so a delivery is never sent twice at once, and
one whose sender died is due again when the lease runs out. The outcome is written on the
same condition, so a sender that lost its lease records nothing.

Retried: connection errors, timeouts, 5xx and 429. Not retried: any other answer (2xx is
delivered; 3xx, since redirects are not followed, and other 4xx fail at once).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import msgspec

from core.domain import auth
from core.domain.auth import Principal
from core.domain.models import DeliveryAttempt, DeliveryState, Task, TaskStatus, WebhookDelivery
from core.domain.signing import signed_headers
from core.domain.urls import WebhookPolicy
from core.errors import NotFoundError, StaleWriteError
from core.services.context import Context

log = logging.getLogger(__name__)

# A sender that claimed an attempt has this long past the receiver's timeout to record it.
LEASE_MARGIN_MS = 5_000
LOST = "the sender stopped before recording an outcome"
SUPERSEDED = "not sent: the task was retried before its large finished state was delivered"
# A finished task's body up to this size is kept on the delivery (a DynamoDB item holds 400 KB;
# a result may be 256 KiB); a larger one is read from the task when it is sent.
BODY_INLINE_LIMIT = 32 * 1024


@dataclass(frozen=True)
class WebhookRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    timeout_s: float
    # Where the call may go (public addresses unless the operator allows networks).
    policy: WebhookPolicy = field(default_factory=WebhookPolicy)


@dataclass(frozen=True)
class WebhookOutcome:
    status_code: int | None
    error: str | None
    duration_ms: int
    # An error no retry can mend (the URL resolves to a metadata address, the task moved on).
    final: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        if self.status_code is None:
            return not self.final
        return self.status_code >= 500 or self.status_code == 429


def for_finish(ctx: Context, finished: Task) -> WebhookDelivery | None:
    """The delivery a task's move to a terminal state stores in the same write (None if the
    task has no webhook), so a crash cannot finish a task and lose its webhook."""
    if finished.webhook is None or not TaskStatus(finished.status).is_terminal:
        return None
    now = ctx.now()
    body = msgspec.json.encode(finished.to_api())
    return WebhookDelivery(
        task_id=finished.id,
        round=finished.retries,
        url=finished.webhook,
        task_status=finished.status,
        body=body.decode() if len(body) <= BODY_INLINE_LIMIT else "",
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
        expires_at=finished.expires_at if finished.expires_at is not None else ctx.expiry_s(now),
    )


class WebhookWaker:
    """A task listener: when a task with a webhook has just finished (its delivery stored
    with it), ask for the delivery to be sent now rather than at the next sweep."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __call__(self, task: Task, previous: TaskStatus | None) -> None:
        if task.webhook is None or not task.status.is_terminal:
            return
        if previous is not None and previous.is_terminal:
            return
        self.ctx.queue.webhook_due(task.id, task.retries)


def claim(ctx: Context, delivery: WebhookDelivery) -> WebhookDelivery | None:
    """Take the next attempt of a due delivery, or None if another sender has it."""
    now = ctx.now()
    changes: dict[str, object] = {
        "attempts": delivery.attempts + 1,
        "next_attempt_at": now + ctx.config.webhook_timeout_ms + LEASE_MARGIN_MS,
        "updated_at": now,
    }
    if len(delivery.log) < delivery.attempts:  # a claimed attempt never settled
        changes["log"] = [*delivery.log, DeliveryAttempt(at=delivery.updated_at, duration_ms=0, error=LOST)]
        if delivery.attempts >= ctx.config.webhook_max_attempts:  # and it was the last one
            changes = {"state": DeliveryState.FAILED, "updated_at": now, "log": changes["log"]}
    try:
        claimed = ctx.store.update_delivery(delivery, changes, due_by=now)
    except StaleWriteError:
        return None
    return claimed if claimed.state is DeliveryState.PENDING else None


def request(ctx: Context, claimed: WebhookDelivery) -> WebhookRequest | WebhookOutcome:
    """The signed POST for this attempt; or, when the body must be read from a task that has
    been retried since, the outcome that ends the delivery."""
    body = claimed.body.encode()
    if not body:  # too large to keep on the delivery: the task as it stands
        task = ctx.store.get_task(claimed.task_id)
        if task is None or task.retries != claimed.round or not task.status.is_terminal:
            return WebhookOutcome(None, SUPERSEDED, 0, final=True)
        body = msgspec.json.encode(task.to_api())
    return WebhookRequest(
        url=claimed.url,
        headers=signed_headers(ctx.webhook_secret, ctx.now() // 1000, body, claimed.id),
        body=body,
        timeout_s=ctx.config.webhook_timeout_ms / 1000,
        policy=WebhookPolicy(ctx.config.webhook_allowed_networks),
    )


def settle(ctx: Context, claimed: WebhookDelivery, outcome: WebhookOutcome) -> WebhookDelivery | None:
    """Record an attempt's outcome: delivered, due again after a backoff, or failed. None if
    the claim was lost meanwhile (its lease ran out and another sender took over)."""
    now = ctx.now()
    entry = DeliveryAttempt(
        at=now - outcome.duration_ms,
        duration_ms=outcome.duration_ms,
        status_code=outcome.status_code,
        error=outcome.error,
    )
    changes: dict[str, object] = {"updated_at": now}
    if outcome.delivered:
        changes["state"] = DeliveryState.DELIVERED
    elif outcome.retryable and claimed.attempts < ctx.config.webhook_max_attempts:
        entry.next_retry_at = changes["next_attempt_at"] = now + backoff_ms(ctx, claimed.attempts)
    else:
        changes["state"] = DeliveryState.FAILED
    changes["log"] = [*claimed.log, entry]
    try:
        return ctx.store.update_delivery(claimed, changes)
    except StaleWriteError:
        log.warning("webhook attempt outcome not recorded: claim lost", extra={"task_id": claimed.task_id})
        return None


def backoff_ms(ctx: Context, attempt: int) -> int:
    """base x 2^(attempt-1), capped, with jitter (half to all of it), so a receiver coming back
    from an outage is not hit by every delivery at once."""
    ceiling = min(
        ctx.config.webhook_retry_max_ms, ctx.config.webhook_retry_base_ms * 2 ** max(0, attempt - 1)
    )
    return int(random.uniform(ceiling / 2, ceiling))


def find(ctx: Context, task_id: str, round_: int) -> WebhookDelivery | None:
    found = [d for d in ctx.store.deliveries_of_task(task_id) if d.round == round_]
    return found[0] if found else None


def deliveries(ctx: Context, principal: Principal, task_id: str) -> tuple[Task, list[WebhookDelivery]]:
    """A task's deliveries, for its owner or an admin (anyone else: 404)."""
    task = auth.visible_task(principal, ctx.store.get_task(task_id), task_id)
    if not principal.is_admin and task.owner != principal.sub:
        raise NotFoundError(f"Task not found: {task_id}")
    return task, ctx.store.deliveries_of_task(task_id)

"""`Idempotency-Key` on task creation: a retried POST returns the task the first one made.

Keys are scoped to the principal (`sub`), so two users never share a key and cannot probe
whether another used one. The first request with a key claims it with a record naming the
task id it is about to create (a conditional write only one caller wins); the task is then
created under that id, also conditionally. Whoever comes next with the same key and body
gets that task; if the first died between the two writes, the retry creates the task under
the claimed id, so a key is never stuck. The same key with another body is a 409.

Powertools' idempotency utility is not used: it wraps Lambda handlers and keeps its records in
DynamoDB only, and the same rule must hold on SQLite (`taskgate serve`).
"""

from __future__ import annotations

import hashlib

import msgspec

from core.domain.auth import Principal
from core.domain.ids import new_task_id
from core.domain.models import Task
from core.domain.schemas import CreateTask
from core.domain.urls import WebhookPolicy
from core.errors import ConflictError, StaleWriteError, ValidationError
from core.ports.storage import IdempotencyRecord
from core.services import tasks
from core.services.context import Context

HEADER = "Idempotency-Key"
KEY_MAX_LENGTH = 255
RECORD_TTL_S = 24 * 3600


def check_key(value: str | None) -> str | None:
    """The header's value, or None when absent; ValidationError when it is unusable."""
    if value is None:
        return None
    if not value:
        raise ValidationError(f"Invalid header {HEADER}: must not be empty")
    if len(value) > KEY_MAX_LENGTH:
        raise ValidationError(f"Invalid header {HEADER}: longer than {KEY_MAX_LENGTH} characters")
    if not all(" " <= c <= "~" for c in value):
        raise ValidationError(f"Invalid header {HEADER}: only printable ASCII characters are allowed")
    return value


def scoped_key(principal: Principal, key: str) -> str:
    """The stored key: a digest of the principal and its key (bounded length, no separator a
    crafted `sub` could forge)."""
    sub = principal.sub.encode()
    return hashlib.sha256(len(sub).to_bytes(4, "big") + sub + key.encode()).hexdigest()


def body_hash(body: CreateTask) -> str:
    """The request as decoded, not as sent: the same JSON with other spacing or key order is
    the same request."""
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


def create_task_once(ctx: Context, principal: Principal, body: CreateTask, key: str) -> tuple[Task, bool]:
    """The task for this key, and whether it is a replay: False when this request wrote it
    (also when completing a claim another request left), True when another request did."""
    tasks.check_create(principal, body, WebhookPolicy(ctx.config.webhook_allowed_networks))
    record = IdempotencyRecord(
        key=scoped_key(principal, key),
        body_hash=body_hash(body),
        task_id=new_task_id(),
        expires_at=ctx.now() // 1000 + RECORD_TTL_S,
    )
    earlier = ctx.store.put_idempotency(record, now_s=ctx.now() // 1000)
    if earlier is not None and earlier.body_hash != record.body_hash:
        raise ConflictError(
            f"{HEADER} was already used with a different request body; use a new key for a new task"
        )
    claim = earlier or record
    if earlier is not None and (found := ctx.store.get_task(claim.task_id)) is not None:
        return found, True
    try:
        return tasks.create_task(ctx, principal, body, task_id=claim.task_id), False
    except StaleWriteError:
        # Another request with this key created it between our read and our write.
        found = ctx.store.get_task(claim.task_id)
        if found is None:
            raise
        return found, True

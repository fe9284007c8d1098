"""Which PENDING tasks start now: the scheduling policy (core/domain/scheduling.py) run over the
store's scheduling index and the fleet view, claiming a server for each task it picks.

Both runtimes call `start_next` on every wake-up (one machine: a task queued, a slot freed, a
backoff ending; AWS: every dispatch message), so priority and fair share hold the same way on
both: a message never dispatches "its" task ahead of better ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from core.domain.models import Task
from core.domain.scheduling import OwnerQueue, Picker, queue_capabilities, queue_key
from core.services import dispatch
from core.services.context import Context
from core.services.dispatch import Assignment, Skipped, Waiting

log = logging.getLogger(__name__)

# Tasks read from an owner queue at a time after its head: a round that takes several.
QUEUE_READ = 16
# A queue whose chosen task no capable server would take this many times in a row is left for
# the next round (the view of the fleet was stale and every claim lost).
_LOST_CLAIMS_PER_QUEUE = 3


@dataclass
class Round:
    """How many tasks one round started, and when a task backing off becomes due (None: none is)."""

    started: int = 0
    wake_at: int | None = None


def start_next(ctx: Context, start: Callable[[Assignment], None], *, limit: int | None = None) -> Round:
    """Claim a server for every task that can start now, best first (at most `limit`). Each
    claim goes to `start` as soon as it is made (the caller makes the predict call), so a store
    fault later in the round cannot strand a claimed task."""
    store = ctx.store

    def read(owner_queue: OwnerQueue, after: tuple[int, str] | None) -> list[Task]:
        # The head alone first (most rounds take one task from a queue), then a few at a time.
        return store.queue_tasks(owner_queue, 1 if after is None else QUEUE_READ, after=after)

    picker = Picker(
        store.owner_queues(),
        store.in_flight_by_owner(),
        read,
        owner_limit=ctx.config.max_in_flight_per_owner,
    )
    lost: dict[str, int] = {}
    # Whether some free server can run a queue, until the next claim changes the fleet.
    can_run: dict[str, bool] = {}

    def runnable(queue: str) -> bool:
        if queue not in can_run:
            fits = lost.get(queue, 0) < _LOST_CLAIMS_PER_QUEUE
            can_run[queue] = fits and ctx.fleet.can_run(queue_capabilities(queue))
        return can_run[queue]

    result = Round()
    now = ctx.now()
    while limit is None or result.started < limit:
        task = picker.next(runnable, now)
        if task is None:
            break
        decision = dispatch.assign(ctx, task)
        can_run.clear()
        if isinstance(decision, Assignment):
            picker.started(task)
            result.started += 1
            start(decision)
        elif isinstance(decision, Skipped):
            picker.skipped(task)
        elif isinstance(decision, Waiting) and decision.owner_full:
            picker.owner_full(task.owner)
        else:
            queue = queue_key(task.capabilities)
            lost[queue] = lost.get(queue, 0) + 1
    result.wake_at = picker.wake_at
    return result

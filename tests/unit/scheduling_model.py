"""A simple reference model of the scheduling policy, and a small fleet to run the real scheduler
on: the property tests and the scenario tests drive both and compare.

The model is the policy as docs/SCHEDULING.md states it, written as a scan over every PENDING
task (no index, no cursor, no cache): of the tasks that are ready, whose owner is under its limit
and that some online server with a free slot can run, the best by (priority descending, owner's
tasks in flight, ready_at, id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from core.config import Config
from core.domain.models import Endpoints, Server, ServerStatus, Task, TaskStatus
from core.local.queue import CallbackQueue
from core.ports.storage import Store
from core.services import scheduler, tasks
from core.services.context import Context
from core.services.dispatch import Assignment

START = 1_700_000_000_000


@dataclass
class ModelTask:
    id: str
    owner: str
    priority: int
    capabilities: frozenset[str]
    ready_at: int


@dataclass
class ModelServer:
    id: str
    capabilities: frozenset[str]
    slots: int
    online: bool = True
    busy: int = 0

    @property
    def free(self) -> int:
        return self.slots - self.busy if self.online else 0


@dataclass
class Model:
    servers: dict[str, ModelServer]
    owner_limit: int = 0
    pending: dict[str, ModelTask] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    running: dict[str, tuple[ModelTask, str]] = field(default_factory=dict)

    def can_run(self, task: ModelTask) -> bool:
        return any(s.free > 0 and task.capabilities <= s.capabilities for s in self.servers.values())

    def best(self, now: int) -> ModelTask | None:
        """The task the policy starts next, or None when nothing can start."""
        candidates = [
            t
            for t in self.pending.values()
            if t.ready_at <= now
            and (self.owner_limit <= 0 or self.in_flight.get(t.owner, 0) < self.owner_limit)
            and self.can_run(t)
        ]
        return min(
            candidates,
            key=lambda t: (-t.priority, self.in_flight.get(t.owner, 0), t.ready_at, t.id),
            default=None,
        )

    def start(self, task_id: str, server_id: str) -> None:
        task = self.pending.pop(task_id)
        self.servers[server_id].busy += 1
        self.in_flight[task.owner] = self.in_flight.get(task.owner, 0) + 1
        self.running[task_id] = (task, server_id)

    def end(self, task_id: str) -> ModelTask:
        task, server_id = self.running.pop(task_id)
        self.servers[server_id].busy -= 1
        self.in_flight[task.owner] -= 1
        return task


class Fleet:
    """The real scheduler over a real store, with a fake clock and no HTTP: what a runtime
    does on a wake-up, minus the predict calls."""

    def __init__(self, store: Store, *, owner_limit: int = 0) -> None:
        self.clock = [START]
        self.ctx = Context(
            store=store,
            queue=CallbackQueue(),
            config=Config(jwt_secret="s" * 32, max_in_flight_per_owner=owner_limit, fleet_cache_ms=60_000),
            clock=lambda: self.clock[0],
        )
        self.model = Model(servers={}, owner_limit=owner_limit)
        self._serial = 0

    @property
    def store(self) -> Store:
        return self.ctx.store

    def add_server(self, capabilities: Iterable[str], slots: int, *, online: bool = True) -> str:
        self._serial += 1
        server_id = f"srv-{self._serial}"
        self.store.put_server(
            Server(
                id=server_id,
                name=server_id,
                endpoints=Endpoints(predict="http://127.0.0.1:9/p", health="http://127.0.0.1:9/h"),
                capabilities=sorted(set(capabilities)),
                max_concurrent=slots,
                status=ServerStatus.ONLINE if online else ServerStatus.OFFLINE,
                registered_at=START,
            )
        )
        self.model.servers[server_id] = ModelServer(server_id, frozenset(capabilities), slots, online)
        self.ctx.fleet.invalidate()
        return server_id

    def submit(self, owner: str, priority: int, capabilities: Iterable[str] = ()) -> str:
        self._serial += 1
        now = self.clock[0]
        task = Task(
            id=f"task-{self._serial:06d}",
            owner=owner,
            type="t",
            priority=priority,
            payload={},
            capabilities=sorted(set(capabilities)),
            attempt_limit=1_000,
            created_at=now,
            updated_at=now,
            queued_at=now,
        )
        self.store.put_task(task)
        self.model.pending[task.id] = ModelTask(task.id, owner, priority, frozenset(capabilities), now)
        return task.id

    def finish(self, task_id: str) -> None:
        task = self.store.get_task(task_id)
        assert task is not None and task.status is TaskStatus.PROCESSING
        tasks.finish(self.ctx, task, TaskStatus.COMPLETED, result={})
        self.model.end(task_id)

    def fail(self, task_id: str, backoff_ms: int) -> None:
        """A failed attempt: back to PENDING, due after `backoff_ms`."""
        task = self.store.get_task(task_id)
        assert task is not None
        requeued = tasks.requeue(self.ctx, task, "boom", backoff_ms=backoff_ms)
        assert requeued.status is TaskStatus.PENDING
        ended = self.model.end(task_id)
        self.model.pending[task_id] = ModelTask(
            task_id, ended.owner, ended.priority, ended.capabilities, requeued.not_before
        )

    def wake(self, check: Callable[[Model, Assignment, int], None] | None = None) -> list[Assignment]:
        """One wake-up of the dispatcher; each claim is checked against the model in order."""
        started: list[Assignment] = []
        scheduler.start_next(self.ctx, started.append)
        for assignment in started:
            if check is not None:
                check(self.model, assignment, self.clock[0])
            self.model.start(assignment.task.id, assignment.server.id)
        return started

    def running(self) -> list[str]:
        return sorted(self.model.running)


def follows_the_model(model: Model, assignment: Assignment, now: int) -> None:
    expected = model.best(now)
    task, server = assignment.task, assignment.server
    assert expected is not None, f"{task.id} started although the model starts nothing"
    assert task.id == expected.id, f"started {task.id}, the policy says {expected.id}"
    chosen = model.servers[server.id]
    assert chosen.online and chosen.free > 0, f"{server.id} overbooked or not online"
    assert expected.capabilities <= chosen.capabilities, f"{server.id} cannot run {task.id}"


def store_counts(store: Store) -> tuple[dict[tuple[str, int, str], int], dict[str, int]]:
    queues = {(q.queue, q.priority, q.owner): q.pending for q in store.owner_queues()}
    return queues, store.in_flight_by_owner()


def model_counts(model: Model) -> tuple[dict[tuple[str, int, str], int], dict[str, int]]:
    queues: dict[tuple[str, int, str], int] = {}
    for t in model.pending.values():
        key = (",".join(sorted(t.capabilities)), t.priority, t.owner)
        queues[key] = queues.get(key, 0) + 1
    return queues, {owner: n for owner, n in model.in_flight.items() if n}

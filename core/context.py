"""What every service function is given: the store, the queue, the settings, the clock and
where task changes are announced."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import Config
from core.events import TaskEvents
from core.fleet import FleetView
from core.ids import now_ms
from core.queue import TaskQueue
from core.storage import Store
from core.telemetry import Telemetry


@dataclass
class Context:
    store: Store
    queue: TaskQueue
    config: Config
    clock: Callable[[], int] = field(default=now_ms)
    events: TaskEvents = field(default_factory=TaskEvents)
    # Where the signing secret comes from when it can change while the process lives (AWS:
    # SSM through Powertools' cache); else config.jwt_secret.
    secret_source: Callable[[], str] | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)
    fleet: FleetView = field(init=False)

    def __post_init__(self) -> None:
        self.fleet = FleetView(self.store, self.config.fleet_cache_ms, self.clock)

    def now(self) -> int:
        return self.clock()

    @property
    def jwt_secret(self) -> str:
        return self.secret_source() if self.secret_source is not None else self.config.jwt_secret

    def expiry_s(self, now: int) -> int:
        """When a task finished at `now` (ms) may be dropped, in epoch seconds."""
        return now // 1000 + self.config.task_ttl_days * 86_400

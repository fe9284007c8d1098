"""What every service function is given: the store, the queue, the settings, the clock and
where task changes are announced."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import Config
from core.domain.ids import now_ms
from core.ports.events import TaskEvents
from core.ports.queue import TaskQueue
from core.ports.storage import Store
from core.ports.telemetry import Telemetry
from core.services.fleet import FleetView
from core.services.rate_leases import RateLeases


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
    # The same for the webhook signing secret (AWS: WEBHOOK_SECRET_PARAMETER); else
    # config.webhook_secret, else one derived from the JWT secret.
    webhook_secret_source: Callable[[], str] | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)
    fleet: FleetView = field(init=False)
    # Counts of closed rate-limit windows, by key (core.services.ratelimit): read once each.
    closed_rate_windows: dict[str, int] = field(init=False, default_factory=dict)
    # Rate-limit hits this process has leased and not served yet (core.services.rate_leases).
    rate_leases: RateLeases = field(init=False, default_factory=RateLeases)

    def __post_init__(self) -> None:
        self.fleet = FleetView(self.store, self.config.fleet_cache_ms, self.clock, self.config.outlier)

    def now(self) -> int:
        return self.clock()

    @property
    def jwt_secret(self) -> str:
        return self.secret_source() if self.secret_source is not None else self.config.jwt_secret

    @property
    def webhook_secret(self) -> str:
        from core.domain.signing import derive_secret

        explicit = self.webhook_secret_source() if self.webhook_secret_source else self.config.webhook_secret
        return explicit or derive_secret(self.jwt_secret)

    def expiry_s(self, now: int) -> int:
        """When a task finished at `now` (ms) may be dropped, in epoch seconds."""
        return now // 1000 + self.config.task_ttl_days * 86_400

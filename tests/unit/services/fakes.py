"""Fakes for the service tests: a clock moved by hand, a queue and telemetry that record what
they are told, and transports whose answers each test scripts, call by call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.domain.models import Server, Task
from core.domain.protocol import BackendRequest, Outcome
from core.ports.queue import TaskQueue
from core.ports.telemetry import Telemetry
from core.services.webhook_delivery import WebhookOutcome, WebhookRequest


class FakeClock:
    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now


@dataclass
class RecordingQueue(TaskQueue):
    enqueued: list[tuple[str, int]] = field(default_factory=list)
    capacity_signals: int = 0
    checks: list[str] = field(default_factory=list)
    webhooks: list[tuple[str, int, int]] = field(default_factory=list)

    def enqueue(self, task_id: str, *, delay_ms: int = 0, snapshot: Task | None = None) -> None:
        self.enqueued.append((task_id, delay_ms))

    def capacity_changed(self) -> None:
        self.capacity_signals += 1

    def check_server(self, server_id: str) -> None:
        self.checks.append(server_id)

    def webhook_due(self, task_id: str, round_: int, *, delay_ms: int = 0) -> None:
        self.webhooks.append((task_id, round_, delay_ms))


@dataclass
class RecordingTelemetry(Telemetry):
    durations: list[tuple[str, float]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, value: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + value

    def duration(self, name: str, ms: float) -> None:
        self.durations.append((name, ms))


def server_of(url: str) -> str:
    """The server id in the loopback URLs `add_server` gives (http://127.0.0.1:9/<id>/...)."""
    return url.split("/")[3]


class ScriptedTransport:
    """The blocking transport, answering from per-server scripts; an unscripted call fails the
    test. `during_predict` runs while a predict is 'on the wire' (to put a cancel or a
    callback there, deterministically). `calls` lists every call in order."""

    def __init__(self) -> None:
        self.predicts: dict[str, list[Outcome]] = {}
        self.health_answers: dict[str, list[tuple[bool, str | None]]] = {}
        self.webhook_answers: list[WebhookOutcome] = []
        self.calls: list[tuple[str, str]] = []
        self.requests: list[BackendRequest] = []
        self.webhook_requests: list[WebhookRequest] = []
        self.during_predict: Callable[[BackendRequest], None] | None = None

    def script(self, server_id: str, *outcomes: Outcome) -> None:
        self.predicts.setdefault(server_id, []).extend(outcomes)

    def script_health(self, server_id: str, *answers: tuple[bool, str | None]) -> None:
        self.health_answers.setdefault(server_id, []).extend(answers)

    def predict(self, request: BackendRequest) -> Outcome:
        server_id = server_of(request.url)
        self.calls.append(("predict", server_id))
        self.requests.append(request)
        if self.during_predict is not None:
            self.during_predict(request)
        answers = self.predicts.get(server_id)
        assert answers, f"unscripted predict call to {server_id}"
        return answers.pop(0)

    def health(self, server: Server, timeout_s: float) -> tuple[bool, str | None]:
        self.calls.append(("health", server.id))
        answers = self.health_answers.get(server.id)
        assert answers, f"unscripted health check of {server.id}"
        return answers.pop(0)

    def cancel(self, task: Task, server: Server) -> None:
        self.calls.append(("cancel", f"{task.id}@{server.id}"))

    def send_webhook(self, request: WebhookRequest) -> WebhookOutcome:
        self.calls.append(("webhook", request.url))
        self.webhook_requests.append(request)
        assert self.webhook_answers, "unscripted webhook POST"
        return self.webhook_answers.pop(0)

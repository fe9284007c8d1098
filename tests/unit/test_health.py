"""Server health thresholds: degraded after 1 failure, offline after 3, online after 2 successes."""

from __future__ import annotations

import msgspec

from core.domain import health
from core.domain.models import Endpoints, Server, ServerStatus


def server(**overrides: object) -> Server:
    base = Server(
        id="s", name="n", endpoints=Endpoints(predict="http://p", health="http://h"), registered_at=0
    )
    return msgspec.structs.replace(base, **overrides)


def run(s: Server, observations: list[bool]) -> list[ServerStatus]:
    seen = []
    for i, ok in enumerate(observations):
        s = msgspec.structs.replace(s, **health.observe(s, ok, i, heartbeat=False))
        seen.append(s.status)
    return seen


def test_failures_degrade_then_take_offline() -> None:
    assert run(server(), [False, False, False]) == [
        ServerStatus.DEGRADED,
        ServerStatus.DEGRADED,
        ServerStatus.OFFLINE,
    ]


def test_two_successes_bring_a_server_back_online() -> None:
    statuses = run(server(), [False, False, False, True, True])
    assert statuses[-2:] == [ServerStatus.OFFLINE, ServerStatus.ONLINE]


def test_a_success_resets_the_failure_run() -> None:
    assert run(server(), [False, True, True, False, False])[-1] == ServerStatus.DEGRADED


def test_maintenance_is_never_changed_by_observations() -> None:
    assert (
        run(server(status=ServerStatus.MAINTENANCE), [False] * 4 + [True] * 3)
        == [ServerStatus.MAINTENANCE] * 7
    )


def test_observation_records_its_source() -> None:
    s = server()
    assert health.observe(s, True, 5, heartbeat=True)["last_heartbeat"] == 5
    assert health.observe(s, True, 5, heartbeat=False)["last_check_at"] == 5


def test_leaving_maintenance_follows_the_last_observations() -> None:
    assert health.status_after_maintenance(server(consecutive_failures=0)) is ServerStatus.ONLINE
    assert health.status_after_maintenance(server(consecutive_failures=1)) is ServerStatus.DEGRADED
    assert health.status_after_maintenance(server(consecutive_failures=3)) is ServerStatus.OFFLINE


def test_a_server_offline_for_silence_stays_offline_on_a_failed_check() -> None:
    # GIVEN a server taken offline for missing heartbeats: its failure count was not touched
    silent = server(status=ServerStatus.OFFLINE, consecutive_failures=0)
    # WHEN health checks fail, THEN it stays offline (a failure used to make it "degraded",
    # which dispatch uses again); successes bring it back as usual
    assert run(silent, [False, False]) == [ServerStatus.OFFLINE, ServerStatus.OFFLINE]
    assert run(silent, [True, True]) == [ServerStatus.OFFLINE, ServerStatus.ONLINE]

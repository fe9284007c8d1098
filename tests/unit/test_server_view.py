"""What a server's list entry says about its last sign of life (existing clients read
`timeSinceLastHeartbeat` as a number of milliseconds, never null)."""

from __future__ import annotations

from core.domain import health
from core.domain.models import Endpoints, Server

REGISTERED = 1_700_000_000_000


def server(**fields: object) -> Server:
    return Server(
        id="gpu-1",
        name="gpu-1",
        endpoints=Endpoints(predict="http://10.0.0.5/predict", health="http://10.0.0.5/health"),
        registered_at=REGISTERED,
        **fields,  # type: ignore[arg-type]
    )


def test_a_new_server_counts_from_its_registration() -> None:
    assert server().to_api(REGISTERED + 4_000)["timeSinceLastHeartbeat"] == 4_000


def test_a_checked_server_that_never_heartbeats_counts_from_its_last_healthy_check() -> None:
    checked = server(**health.observe(server(), True, REGISTERED + 10_000, heartbeat=False))
    view = checked.to_api(REGISTERED + 12_500)
    assert view["lastHeartbeat"] is None
    assert view["timeSinceLastHeartbeat"] == 2_500


def test_a_failed_check_is_no_sign_of_life_but_a_heartbeat_is() -> None:
    seen = server(last_healthy_at=REGISTERED + 1_000)
    failed = server(
        **health.observe(seen, False, REGISTERED + 8_000, heartbeat=False), last_healthy_at=REGISTERED + 1_000
    )
    assert failed.to_api(REGISTERED + 9_000)["timeSinceLastHeartbeat"] == 8_000
    beating = server(last_heartbeat=REGISTERED + 7_000, last_healthy_at=REGISTERED + 1_000)
    assert beating.to_api(REGISTERED + 9_000)["timeSinceLastHeartbeat"] == 2_000


def test_it_is_never_negative_when_clocks_differ() -> None:
    assert server(last_heartbeat=REGISTERED + 5_000).to_api(REGISTERED + 4_000)["timeSinceLastHeartbeat"] == 0

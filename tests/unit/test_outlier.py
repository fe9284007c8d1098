"""Outlier detection's policy on a fake clock: when a server is ejected, for how long, how the
time grows and is forgiven, and the slow start that follows."""

from __future__ import annotations

from typing import Any

import pytest

from core.config import Config, OutlierPolicy
from core.domain import health, outlier
from core.domain.models import Endpoints, Server, ServerStatus

NOW = 1_700_000_000_000
POLICY = OutlierPolicy(
    consecutive_failures=3, base_ejection_ms=10_000, max_ejection_ms=35_000, slow_start_ms=10_000
)


def server(**fields: Any) -> Server:
    return Server(
        id="a",
        name="a",
        endpoints=Endpoints(predict="http://a/p", health="http://a/h"),
        registered_at=0,
        max_concurrent=10,
        **fields,
    )


def eject(s: Server, now: int) -> Server:
    changes = outlier.ejection(s, now, POLICY)
    return Server(**{**{f: getattr(s, f) for f in s.__struct_fields__}, **changes})


def test_below_the_threshold_nothing_is_ejected() -> None:
    assert not outlier.should_eject(server(outlier_failures=2), NOW, POLICY, ejected_now=0, fleet_size=4)
    assert outlier.should_eject(server(outlier_failures=3), NOW, POLICY, ejected_now=0, fleet_size=4)


def test_an_ejected_server_is_not_ejected_again_until_it_returns() -> None:
    ejected = eject(server(outlier_failures=3), NOW)
    assert not outlier.should_eject(ejected, NOW + 1, POLICY, ejected_now=0, fleet_size=4)


def test_never_more_than_the_share_of_the_fleet_but_always_one() -> None:
    failing = server(outlier_failures=5)
    assert outlier.should_eject(failing, NOW, POLICY, ejected_now=0, fleet_size=1)  # one is always allowed
    assert not outlier.should_eject(failing, NOW, POLICY, ejected_now=1, fleet_size=3)  # 50% of 3 is 1
    assert outlier.should_eject(failing, NOW, POLICY, ejected_now=1, fleet_size=4)


def test_turned_off_with_zero() -> None:
    off = OutlierPolicy(consecutive_failures=0)
    assert not outlier.should_eject(server(outlier_failures=99), NOW, off, ejected_now=0, fleet_size=4)


def test_ejection_time_grows_with_repeated_ejections_and_is_capped() -> None:
    s = server(outlier_failures=3)
    lengths = []
    now = NOW
    for _ in range(5):
        s = eject(s, now)
        assert s.ejected_until is not None
        lengths.append(s.ejected_until - now)
        assert s.outlier_failures == 0
        now = s.ejected_until + 1  # fails again at once on return
    assert lengths == [10_000, 20_000, 30_000, 35_000, 35_000]


def test_time_back_in_selection_forgives_earlier_ejections() -> None:
    s = eject(eject(server(), NOW), NOW + 10_001)  # two ejections: the second lasts 20 s
    assert s.ejections == 2 and s.ejected_until == NOW + 30_001
    # 20 s (two base times) healthy after it returned: both are forgiven, the next is the base time.
    later = s.ejected_until + 20_000
    again = eject(s, later)
    assert (again.ejections, again.ejected_until) == (1, later + 10_000)


def test_slot_limit_zero_while_ejected_then_a_growing_share() -> None:
    s = eject(server(), NOW)
    back = NOW + 10_000
    assert outlier.slot_limit(s, NOW, POLICY) == 0
    assert outlier.slot_limit(s, back - 1, POLICY) == 0
    assert outlier.slot_limit(s, back, POLICY) == 1  # never 0 once back
    assert outlier.slot_limit(s, back + 2_500, POLICY) == 3
    assert outlier.slot_limit(s, back + 5_000, POLICY) == 5
    assert outlier.slot_limit(s, back + 9_999, POLICY) == 10
    assert outlier.slot_limit(s, back + 10_000, POLICY) == 10
    assert outlier.slot_limit(s, back + 10_000, OutlierPolicy(slow_start_ms=0)) == 10


def test_health_checks_bringing_a_server_back_start_its_slow_start() -> None:
    degraded = server(status=ServerStatus.DEGRADED, consecutive_successes=1)
    changes = health.observe(degraded, True, NOW, heartbeat=False)
    assert changes["status"] is ServerStatus.ONLINE and changes["slow_start_from"] == NOW
    steady = health.observe(server(), True, NOW, heartbeat=False)
    assert "slow_start_from" not in steady


def test_config_reads_and_checks_the_outlier_settings() -> None:
    env = {
        "OUTLIER_CONSECUTIVE_FAILURES": "5",
        "OUTLIER_BASE_EJECTION": "1000",
        "OUTLIER_MAX_EJECTION": "4000",
        "OUTLIER_MAX_EJECTION_PERCENT": "20",
        "SLOW_START_WINDOW": "0",
    }
    assert Config.from_env(env).outlier == OutlierPolicy(5, 1000, 4000, 20, 0)
    assert Config.from_env({}).outlier == OutlierPolicy(3, 30_000, 300_000, 50, 30_000)
    with pytest.raises(ValueError, match="OUTLIER_MAX_EJECTION_PERCENT"):
        Config.from_env({"OUTLIER_MAX_EJECTION_PERCENT": "101"})
    with pytest.raises(ValueError, match="at least OUTLIER_BASE_EJECTION"):
        Config.from_env({"OUTLIER_BASE_EJECTION": "10", "OUTLIER_MAX_EJECTION": "5"})
    with pytest.raises(ValueError, match="integer"):
        Config.from_env({"SLOW_START_WINDOW": "soon"})

"""`Prefer: wait=N` as POST /api/task reads it, and the waits the deployment allows."""

from __future__ import annotations

import pytest

from core.config import Config
from core.domain.prefer import wait_seconds
from core.errors import ValidationError


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        (None, None),
        ("", None),
        ("respond-async", None),
        ("wait=10", 10),
        ("WAIT=1", 1),
        ("respond-async, wait=60", 60),
        ('wait="5"', 5),
        ("handling=lenient; x=1, wait=7", 7),
    ],
)
def test_the_wait_preference_is_found_among_others(header: str | None, wait: int | None) -> None:
    assert wait_seconds(header) == wait


@pytest.mark.parametrize("header", ["wait=0", "wait=61", "wait=", "wait=soon", "wait=1.5", "wait=-3"])
def test_a_wait_outside_one_to_sixty_whole_seconds_is_refused(header: str) -> None:
    with pytest.raises(ValidationError, match="1-60"):
        wait_seconds(header)


def test_the_deployment_caps_every_wait_of_a_create() -> None:
    config = Config.from_env({"SYNC_WAIT_S": "40", "SYNC_WAIT_MAX": "25"})
    assert (config.sync_wait_ms, config.sync_wait_max_ms) == (25_000, 25_000)
    defaults = Config.from_env({})
    assert (defaults.sync_wait_ms, defaults.sync_wait_max_ms, defaults.stream_wait_ms) == (
        25_000,
        60_000,
        20_000,
    )


@pytest.mark.parametrize(
    "env",
    [
        {"SYNC_WAIT_MAX": "0"},
        {"SYNC_WAIT_MAX": "61"},
        {"SYNC_WAIT_S": "-1"},
        {"STREAM_WAIT_S": "0"},
        {"OUTPUT_CHUNK_MAX_BYTES": "0"},
    ],
)
def test_settings_out_of_range_stop_the_start(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"SYNC_WAIT|STREAM_WAIT|OUTPUT_"):
        Config.from_env(env)

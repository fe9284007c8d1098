"""Short (CI) or long runs of the reliability tests: `pytest --long` or TASKGATE_LONG=1
scales every count to the issue's numbers; the default keeps the folder under a minute."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

LONG_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Scale:
    long: bool
    crash_tasks: int
    chaos_tasks: int
    duplicate_tasks: int
    racers: int
    fuzz_examples: int  # per operation


SHORT = Scale(long=False, crash_tasks=200, chaos_tasks=240, duplicate_tasks=12, racers=50, fuzz_examples=5)
LONG = Scale(long=True, crash_tasks=1000, chaos_tasks=2000, duplicate_tasks=60, racers=50, fuzz_examples=40)


def is_long(config: pytest.Config) -> bool:
    return bool(config.getoption("--long")) or os.environ.get("TASKGATE_LONG") == "1"


@pytest.fixture(scope="session")
def scale(pytestconfig: pytest.Config) -> Scale:
    return LONG if is_long(pytestconfig) else SHORT


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_long(config):
        for item in items:
            if "tests/reliability" in item.nodeid:
                item.add_marker(pytest.mark.timeout(LONG_TIMEOUT_S))


# Every storage adapter, as the contract suite opens them (SQLite file; DynamoDB on moto; memory).
from tests.contract.conftest import moto_dynamodb, open_store, store  # noqa: E402

__all__ = ["LONG", "SHORT", "Scale", "moto_dynamodb", "open_store", "scale", "store"]

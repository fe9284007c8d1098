"""The scheduler's property test (tests/unit/test_scheduler_properties.py) on DynamoDB under moto:
the same generated fleets and histories, each on a fresh table, checked against the same
reference model after every wake-up (fewer and shorter examples, not shrunk: under moto each is a few seconds)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from core.aws.dynamodb import DynamoStore
from tests.support.aws import load_template
from tests.unit.test_scheduler_properties import events, run, servers
from tools.moto_env import create_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_tables = itertools.count()


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    # Shrinking replays hundreds of examples; under moto each costs seconds.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(
    fleet_spec=servers,
    offline=st.sampled_from([-1, -1, 0]),
    history=st.lists(events, min_size=3, max_size=12),
    owner_limit=st.sampled_from([0, 0, 2]),
)
@pytest.mark.timeout(600)
def test_dynamodb_schedules_as_the_model_says(
    moto_dynamodb: DynamoDBClient,
    fleet_spec: list[tuple[frozenset[str], int]],
    offline: int,
    history: list[object],
    owner_limit: int,
) -> None:
    name = create_table(moto_dynamodb, f"scheduler-{next(_tables)}", load_template())
    try:
        run(DynamoStore(name, client=moto_dynamodb), fleet_spec, offline, history, owner_limit)
    finally:
        moto_dynamodb.delete_table(TableName=name)

"""Stream records of the table read as task changes: the one place that knows which records
are task writes (the notifier and the statistics consumer both rely on it)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from core.aws.dynamodb.items import OUTCOME_REF, task_to_item
from core.aws.dynamodb.keys import server_key, task_key
from core.aws.dynamodb.stream_records import task_change
from core.domain.models import TaskStatus
from tests.contract.factories import make_task


def record(event_name: str, new: dict[str, Any] | None, old: dict[str, Any] | None = None) -> dict[str, Any]:
    change: dict[str, Any] = {}
    if new is not None:
        change["NewImage"] = new
        change["Keys"] = {name: new[name] for name in ("PK", "SK")}
    if old is not None:
        change["OldImage"] = old
    return {"eventID": "e-1", "eventName": event_name, "dynamodb": change}


def test_a_task_created_is_a_change_from_nothing() -> None:
    task = make_task()
    change = task_change(record("INSERT", dict(task_to_item(task))))
    assert change is not None
    assert (change.task, change.previous_status, change.outcome_elsewhere) == (task, None, False)


def test_a_task_changed_carries_its_status_before() -> None:
    before = make_task()
    after = msgspec.structs.replace(before, status=TaskStatus.CANCELLED, updated_at=before.updated_at + 1)
    change = task_change(record("MODIFY", dict(task_to_item(after)), dict(task_to_item(before))))
    assert change is not None
    assert (change.task, change.previous_status) == (after, TaskStatus.PENDING)


@pytest.mark.parametrize(
    "ref",
    [{"S": "results/t-1/1-0123456789abcdef.json"}, {"BOOL": True}],
    ids=["in-the-bucket", "in-an-outcome-item"],
)
def test_a_task_whose_outcome_lives_elsewhere_says_so(ref: dict[str, Any]) -> None:
    item = dict(task_to_item(make_task())) | {OUTCOME_REF: ref}
    change = task_change(record("MODIFY", item))
    assert change is not None and change.outcome_elsewhere
    assert change.task.result is None  # who needs it reads the task from the store


@pytest.mark.parametrize(
    "event",
    [
        record("REMOVE", None, dict(task_to_item(make_task()))),  # a TTL removal: old image only
        record("MODIFY", dict(server_key("gpu-1")) | {"name": {"S": "gpu-1"}}),
        record("MODIFY", dict(task_key("t-1")) | {"SK": {"S": "OUTCOME"}}),  # the large outcome
        {"eventName": "INSERT", "dynamodb": {}},
        {"dynamodb": {"NewImage": dict(task_to_item(make_task()))}},  # no event name
    ],
    ids=["removal", "server", "outcome-item", "no-image", "no-event-name"],
)
def test_a_record_that_is_not_a_task_write_is_none(event: dict[str, Any]) -> None:
    assert task_change(event) is None


def test_a_task_item_that_does_not_decode_raises() -> None:
    with pytest.raises(msgspec.ValidationError):
        task_change(record("INSERT", dict(task_key("t-1"))))

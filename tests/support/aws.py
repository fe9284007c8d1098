"""AWS test support: read template.yaml, and build its resources in the current moto mock.

Tests create the table only through `create_table`, from the template's own definition, so the
template and the tests cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handlers import moto_env

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
TEST_TABLE_NAME = "taskgate-test"


def load_template(path: Path | None = None) -> dict[str, Any]:
    return moto_env.load_template(path or TEMPLATE)


def create_table(client: DynamoDBClient, path: Path | None = None) -> str:
    """Create the template's `Table` with `client` (in the current moto mock); return its name."""
    template = load_template(path)
    name = template["Resources"]["Table"]["Properties"].get("TableName")
    name = name if isinstance(name, str) else TEST_TABLE_NAME
    moto_env.create_table(client, name, template)
    client.get_waiter("table_exists").wait(TableName=name)
    return name


EVENTS = Path(__file__).resolve().parents[2] / "events"


def load_event(name: str, token: str | None = None) -> dict[str, Any]:
    """An event from events/ (with a bearer token put in, for the API Gateway ones)."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    if token is not None:
        event["headers"]["authorization"] = f"Bearer {token}"
    return event

"""AWS test support: read template.yaml, and build its resources in the current moto mock.

Tests create the table only through `create_table`, from the template's own definition, so the
template and the tests cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
TEST_TABLE_NAME = "taskgate-test"


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short tags (`!Ref X`, `!GetAtt A.B`, `!Sub ...`)
    as the long form they stand for (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, ...)."""


def _short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_TemplateLoader.add_multi_constructor("!", _short_tag)


def load_template(path: Path | None = None) -> dict[str, Any]:
    with (path or TEMPLATE).open(encoding="utf-8") as file:
        template: dict[str, Any] = yaml.load(file, Loader=_TemplateLoader)  # a SafeLoader
    return template


def create_table(client: DynamoDBClient, path: Path | None = None) -> str:
    """Create the template's `Table` with `client` (in the current moto mock); return its name."""
    table = load_template(path)["Resources"]["Table"]["Properties"]
    name = table.get("TableName")
    name = name if isinstance(name, str) else TEST_TABLE_NAME
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": table["KeySchema"],
        "AttributeDefinitions": table["AttributeDefinitions"],
        "BillingMode": table["BillingMode"],
    }
    if "GlobalSecondaryIndexes" in table:
        request["GlobalSecondaryIndexes"] = table["GlobalSecondaryIndexes"]
    if "StreamSpecification" in table:
        request["StreamSpecification"] = {"StreamEnabled": True, **table["StreamSpecification"]}
    client.create_table(**request)
    client.get_waiter("table_exists").wait(TableName=name)
    ttl = table.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    return name

"""AWS emulated in this process by moto, and the context object Lambda hands a handler: for
`taskgate dev --aws` and for the tests.

The table is built from template.yaml's own `Table` definition, so what is emulated and what
is deployed cannot drift apart. moto, PyYAML and boto3's models come from the dev extra and
are imported only when used.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import handlers

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def use_fake_aws() -> None:
    """Set before any boto3 client exists, so nothing can reach a real account."""
    os.environ.update(FAKE_AWS_ENV)
    for name in list(os.environ):
        if name == "AWS_PROFILE" or name.startswith("AWS_ENDPOINT_URL"):
            del os.environ[name]


@contextlib.contextmanager
def one_request_at_a_time() -> Iterator[threading.Event]:
    """Let moto handle one request at a time. DynamoDB applies each request atomically; moto
    does not when threads call it at once (lost ADDs, two winners of one transaction). Threads
    still interleave between requests, which is where real races are. The event yielded is
    set on every SQS SendMessage (it wakes `dev --aws`'s queue poller)."""
    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.RLock()
    sent = threading.Event()
    handle = BotocoreStubber.__call__

    def atomic_handle(self: BotocoreStubber, event_name: str, *args: Any, **kwargs: Any) -> Any:
        with lock:
            response = handle(self, event_name, *args, **kwargs)
        if event_name.endswith(".sqs.SendMessage"):
            sent.set()
        return response

    BotocoreStubber.__call__ = atomic_handle  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        BotocoreStubber.__call__ = handle  # type: ignore[method-assign]


@contextlib.contextmanager
def faster_dynamodb() -> Iterator[None]:
    """Take out two costs of moto's DynamoDB that grow with the whole table, not with what a
    call reads or writes; at a few hundred items they outweigh everything else `dev --aws`
    does. Use under `one_request_at_a_time` (the switches are global to moto's module).

    - Every Query and Scan first sorts every item of the table by its keys (and compares
      moto's typed values slowly). Nothing needs that order: a Query sorts what it found
      again, and the order of a Scan is unspecified in DynamoDB too.
    - Every TransactWriteItems deep-copies each table it names (once per item), to roll back
      if it fails; every claim and release of a task is a transaction. Here the conditions
      are checked first, against the state before the transaction, as DynamoDB does (an
      item appears once in a transaction, so their order does not matter): if one fails, the
      transaction is cancelled with the reasons moto would give, having written nothing; if
      all hold, moto applies the writes, with no copy. Anything unusual (a repeated key, an
      unknown operation, a malformed expression) goes moto's own way.
    """
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import ConditionalCheckFailed, TransactionCanceledException
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    class TablesNotCopied:
        """`copy` as moto's DynamoDB module sees it while a transaction that cannot fail runs."""

        @staticmethod
        def deepcopy(value: Any) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value)

    transact = DynamoDBBackend.transact_write_items
    sorted_items = Table.all_items

    def all_items(table: Table) -> list[Item]:
        if table.range_key_attr:
            return [item for items in table.items.values() for item in items.values()]
        return cast(list[Item], list(table.items.values()))  # keyed by hash key alone

    Reason = tuple[str | None, str | None, dict[str, Any] | None]

    def reasons(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> list[Reason] | None:
        """Why each item would fail (all None: none would), or None to leave it to moto."""
        keys: set[tuple[str, str]] = set()
        found: list[Reason] = []
        for entry in transact_items:
            if len(entry) != 1:
                return None
            op_type, op = next(iter(entry.items()))
            table = backend.get_table(op["TableName"])
            if op_type == "Put":
                names = [table.hash_key_attr, *([table.range_key_attr] if table.range_key_attr else [])]
                key = {name: op["Item"][name] for name in names}
            elif op_type in ("Update", "Delete", "ConditionCheck"):
                key = op["Key"]
            else:
                return None
            keys.add((op["TableName"], json.dumps(key, sort_keys=True)))
            if "ConditionExpression" not in op:
                found.append((None, None, None))
                continue
            condition = get_filter_expression(
                op["ConditionExpression"],
                op.get("ExpressionAttributeNames"),
                op.get("ExpressionAttributeValues"),
            )
            current = backend.get_item(op["TableName"], key)
            if condition.expr(current):
                found.append((None, None, None))
            else:
                wanted = op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
                old = current.to_json()["Attributes"] if wanted and current is not None else None
                found.append(("ConditionalCheckFailed", str(ConditionalCheckFailed(item=old).message), old))
        return found if len(keys) == len(transact_items) else None

    def transact_write_items(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        try:
            found = reasons(backend, transact_items)
        except Exception:
            found = None  # a malformed request: moto says what is wrong with it
        if found is None:
            return transact(backend, transact_items)
        if any(code is not None for code, _, _ in found):
            raise TransactionCanceledException(found)
        # `copy` as the module sees it, for this call only (moto answers one call at a time)
        vars(models)["copy"] = TablesNotCopied
        try:
            return transact(backend, transact_items)
        finally:
            vars(models)["copy"] = copy

    # Patching moto's methods is the point here; mypy sees a plain function for a method.
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign,assignment]
    Table.all_items = all_items  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        DynamoDBBackend.transact_write_items = transact  # type: ignore[method-assign]
        Table.all_items = sorted_items  # type: ignore[method-assign]


def template_path() -> Path:
    path = Path(handlers.__file__).resolve().parents[1] / "template.yaml"
    if not path.is_file():
        raise SystemExit(
            f"{path} not found: the AWS emulation runs from a source checkout, where template.yaml"
            " defines the table it emulates"
        )
    return path


def load_template(path: Path | None = None) -> dict[str, Any]:
    """template.yaml, with CloudFormation short tags (`!Ref X`, `!GetAtt A.B`, `!Sub ...`)
    read as the long form they stand for (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`)."""
    import yaml

    class TemplateLoader(yaml.SafeLoader):
        pass

    def short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if suffix == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}": value}

    TemplateLoader.add_multi_constructor("!", short_tag)
    with (path or template_path()).open(encoding="utf-8") as file:
        template: dict[str, Any] = yaml.load(file, Loader=TemplateLoader)  # a SafeLoader
    return template


def create_table(client: DynamoDBClient, name: str, template: dict[str, Any] | None = None) -> str:
    """Create the template's `Table` (keys, indexes, stream, TTL) as `name`; return the name."""
    table = (template or load_template())["Resources"]["Table"]["Properties"]
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
    if "TimeToLiveSpecification" in table:
        client.update_time_to_live(TableName=name, TimeToLiveSpecification=table["TimeToLiveSpecification"])
    return name


@dataclass
class LambdaContext:
    """What Powertools reads from the context object Lambda passes a handler."""

    function_name: str
    timeout_s: int = 60
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


def matches(pattern: Any, value: Any) -> bool:
    """An event source mapping's filter pattern (the subset templates use here: nested objects
    whose leaves list the allowed values) against a record."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            name in value and matches(inner, value[name]) for name, inner in pattern.items()
        )
    if isinstance(pattern, list):
        return value in pattern
    return bool(pattern == value)


def stream_filters(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    """The filter patterns of `function`'s DynamoDB event in the template (none: everything)."""
    import json

    events = template["Resources"][function]["Properties"]["Events"].values()
    (event,) = [e for e in events if e["Type"] == "DynamoDB"]
    filters = event["Properties"].get("FilterCriteria", {}).get("Filters", [])
    return [json.loads(f["Pattern"]) for f in filters]


def streams_client() -> Any:
    """A `dynamodbstreams` client moto answers: botocore would send calls naming a stream ARN
    to an account-specific endpoint (<account>.streams-ddb...), which moto does not serve."""
    import boto3
    from botocore.config import Config

    return boto3.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))


class StreamReader:
    """Reads a table's DynamoDB stream as Lambda's event source mapping would hand it to a
    function: records in order per shard, each with `eventSourceARN`, filtered by the
    function's patterns (a record passes if any matches).

    Each read asks for a fresh iterator after the last record seen: moto replaces a table's
    stream shard with a copy when it rolls back a cancelled transaction, and an older iterator
    would go on reading the copy nothing writes to any more."""

    def __init__(self, streams: Any, stream_arn: str, patterns: list[dict[str, Any]]) -> None:
        self.streams = streams  # a `dynamodbstreams` client (streams_client())
        self.stream_arn = stream_arn
        self.patterns = patterns
        self._last: dict[str, str] = {}  # shard id -> sequence number of the last record read

    def read(self, limit: int = 100) -> list[dict[str, Any]]:
        """New records since the last read (at most `limit` per shard)."""
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        records: list[dict[str, Any]] = []
        for shard in shards:
            shard_id = shard["ShardId"]
            position: dict[str, str] = (
                {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self._last[shard_id]}
                if shard_id in self._last
                else {"ShardIteratorType": "TRIM_HORIZON"}
            )
            iterator = self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, **position
            )
            got = self.streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=limit)["Records"]
            if got:
                self._last[shard_id] = got[-1]["dynamodb"]["SequenceNumber"]
            for record in got:
                record = {**record, "eventSourceARN": self.stream_arn}
                if not self.patterns or any(matches(p, record) for p in self.patterns):
                    records.append(record)
        return records

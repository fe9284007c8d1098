"""Items of the DynamoDB table: attribute values, `to_item` / `from_item`, the derived index
keys of a task and of a delivery. The table and its access patterns are described in
`core.aws.dynamodb`; the keys are built in `core.aws.dynamodb.keys`.

Task and server fields are stored under their own names. JSON-valued fields are stored as JSON
strings so that floats and nested data round-trip exactly (DynamoDB numbers would come back as
Decimal, and cannot hold every float). None-valued fields are not stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from core.aws.dynamodb.keys import (
    DELIVERIES_DUE,
    delivery_key,
    fleet_index_keys,
    owner_partition,
    owner_queue_partition,
    pending_prefix,
    recent_partition,
    server_key,
    server_partition,
    task_key,
)
from core.domain.models import DeliveryState, Server, Task, TaskStatus, WebhookDelivery
from core.domain.scheduling import queue_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

    Item = dict[str, AttributeValueTypeDef]

S = TypeVar("S", Task, Server, WebhookDelivery)

TTL = "expiresAt"
JSON_FIELDS = frozenset({"payload", "result", "error", "reported", "endpoints", "log", "history"})
NO_DEADLINE = 9_999_999_999_999


# -- attribute values ------------------------------------------------------------------------


def to_value(value: Any) -> AttributeValueTypeDef:
    """A plain value (str, int, bool, list of those) as a DynamoDB attribute value."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list | tuple):
        return {"L": [to_value(v) for v in value]}
    raise TypeError(f"no DynamoDB attribute for {type(value).__name__}")


def from_value(value: AttributeValueTypeDef) -> Any:
    if "S" in value:
        return value["S"]
    if "N" in value:
        return int(value["N"])
    if "BOOL" in value:
        return value["BOOL"]
    if "L" in value:
        return [from_value(v) for v in value["L"]]
    raise TypeError(f"unexpected DynamoDB attribute {sorted(value)}")


def field_value(name: str, value: Any) -> AttributeValueTypeDef:
    """A Task or Server field (any Python value the model holds) as an attribute value."""
    if name in JSON_FIELDS:
        return {"S": msgspec.json.encode(value).decode()}
    return to_value(msgspec.to_builtins(value))


def field_values(changes: Mapping[str, Any]) -> dict[str, AttributeValueTypeDef | None]:
    """`changes` as attribute values; None means the attribute is removed."""
    return {name: None if value is None else field_value(name, value) for name, value in changes.items()}


def fields_from_item(kind: type[S], item: Item) -> S:
    fields: dict[str, Any] = {}
    for name in kind.__struct_fields__:
        if name in item:
            value = from_value(item[name])
            fields[name] = msgspec.json.decode(value) if name in JSON_FIELDS else value
    return msgspec.convert(fields, kind)


def check_fields(kind: type[S], names: Iterable[str]) -> None:
    unknown = set(names) - set(kind.__struct_fields__)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")


# -- tasks -----------------------------------------------------------------------------------

# The derived attributes of a task, in groups, each with the task fields it is computed from.
# A write that changes none of a group's fields (status included) leaves the group alone.
INDEX_GROUPS: dict[str, tuple[str, ...]] = {
    "ByOwner": ("owner", "created_at"),
    "ByStatus": ("status", "priority", "queued_at", "deadline"),
    "ByServer": ("status", "server_id"),
    "ByRecent": ("status", "created_at"),
    TTL: ("status", "expires_at"),
    "ByQueue": ("status", "priority", "owner", "capabilities", "queued_at", "not_before"),
}


def index_inputs(group: str, status: TaskStatus) -> tuple[str, ...]:
    """The fields, besides `id` and `status`, that `group` reads for a task in `status`."""
    if group == "ByOwner":
        return ("owner", "created_at")
    if group == "ByStatus" and status is TaskStatus.PENDING:
        return ("priority", "queued_at")
    if group == "ByStatus" and status is TaskStatus.PROCESSING:
        return ("deadline",)
    if group == "ByServer" and status is TaskStatus.PROCESSING:
        return ("server_id",)
    if group == "ByRecent":
        return ("created_at",)
    if group == TTL and status.is_terminal:
        return ("expires_at",)
    if group == "ByQueue" and status is TaskStatus.PENDING:
        return ("priority", "owner", "capabilities", "queued_at", "not_before")
    return ()


def index_attributes(group: str, task: Mapping[str, Any]) -> dict[str, str | int | None]:
    """The attributes of `group` for a task with these field values (None: not present).

    `task` needs `id`, `status` and the fields `index_inputs` names for that status.
    """
    status = TaskStatus(task["status"])
    task_id = task["id"]
    if group == "ByOwner":
        return {
            "GSI1PK": owner_partition(task["owner"]),
            "GSI1SK": f"{task['created_at']:013d}#{task_id}",
        }
    if group == "ByStatus":
        if status is TaskStatus.PENDING:
            sort = f"{pending_prefix(task['priority'])}{task['queued_at']:013d}#{task_id}"
            return {"GSI2PK": status.value, "GSI2SK": sort}
        if status is TaskStatus.PROCESSING:
            deadline = NO_DEADLINE if task["deadline"] is None else task["deadline"]
            return {"GSI2PK": status.value, "GSI2SK": f"{deadline:013d}#{task_id}"}
        return {"GSI2PK": None, "GSI2SK": None}
    if group == "ByServer":
        if status is TaskStatus.PROCESSING:
            return {"GSI3PK": server_partition(task["server_id"]), "GSI3SK": task_id}
        return {"GSI3PK": None, "GSI3SK": None}
    if group == "ByRecent":
        return {"GSI4PK": recent_partition(status), "GSI4SK": f"{task['created_at']:013d}#{task_id}"}
    if group == TTL:
        return {TTL: task["expires_at"] if status.is_terminal else None}
    if group == "ByQueue":
        if status is TaskStatus.PENDING:
            ready = max(task["queued_at"], task["not_before"])
            return {
                "GSI5PK": owner_queue_partition(
                    queue_key(task["capabilities"]), task["priority"], task["owner"]
                ),
                "GSI5SK": f"{ready:013d}#{task_id}",
            }
        return {"GSI5PK": None, "GSI5SK": None}
    raise ValueError(f"no index group {group}")


def task_index_attributes(task: Task) -> dict[str, str | int | None]:
    fields = {name: getattr(task, name) for name in task.__struct_fields__}
    return {name: value for group in INDEX_GROUPS for name, value in index_attributes(group, fields).items()}


def task_to_item(task: Task) -> Item:
    item = task_key(task.id)
    for name, value in field_values(msgspec.structs.asdict(task)).items():
        if value is not None:
            item[name] = value
    for name, derived in task_index_attributes(task).items():
        if derived is not None:
            item[name] = to_value(derived)
    return item


# What the listing indexes (ByOwner, ByRecent) project: a task without its bulky fields.
BULKY_FIELDS = frozenset({"payload", "result", "error", "history"})
SUMMARY_FIELDS = tuple(name for name in Task.__struct_fields__ if name not in BULKY_FIELDS)


def summary_from_item(item: Item) -> Task:
    """A task from a listing index entry: payload empty, result and error unknown (None).
    Good for Task.to_summary and list positions, not for anything that reads those three."""
    return task_from_item({**item, "payload": {"S": "{}"}})


def task_from_item(item: Item) -> Task:
    return fields_from_item(Task, item)


# A task's result and error may be as large as a request body (256 KiB), next to a payload as
# large: together past DynamoDB's 400 KB item limit. Past this size (together, as JSON) they move
# to the payload bucket (core.aws.payloads) and the task item keeps the object's key in
# OUTCOME_REF. The limit keeps the item, and so every write of it, small: a result read back
# costs one S3 GET instead.
OUTCOME_FIELDS = ("result", "error")
OUTCOME_INLINE_LIMIT = 32 * 1024
OUTCOME_REF = "outcome_ref"

# On a task item whose payload is in the payload bucket (core.aws.payloads): the object's key.
PAYLOAD_REF = "payload_ref"

# Set on a task item once a WebSocket connection subscribes to the task (never cleared): the
# notifier's stream filter passes only the changes of followed tasks, so a task nobody follows
# costs the notifier no invocation and no read.
FOLLOWED = "followed"


def outcome_size(values: Mapping[str, AttributeValueTypeDef | None]) -> int:
    return sum(len(v["S"]) for name in OUTCOME_FIELDS if (v := values.get(name)) is not None and "S" in v)


def outcome_object(item: Item) -> str | None:
    """The key of the bucket object holding the item's result and error, if it has one."""
    ref = item.get(OUTCOME_REF)
    return ref["S"] if ref is not None and "S" in ref else None


def has_outcome_item(item: Item) -> bool:
    """Whether the task item's result and error are in its OUTCOME item: how versions before
    the bucket stored a large outcome (OUTCOME_REF true). Such items are read, never written."""
    ref = item.get(OUTCOME_REF)
    return ref is not None and "BOOL" in ref


def merge_outcome(task_item: Item, outcome_item: Item | None) -> Item:
    """The task item with the result and error of its OUTCOME item put back (if it has them)."""
    if not has_outcome_item(task_item) or outcome_item is None:
        return task_item
    merged = dict(task_item)
    for name in OUTCOME_FIELDS:
        if name in outcome_item:
            merged[name] = outcome_item[name]
    return merged


# -- servers ---------------------------------------------------------------------------------


def server_to_item(server: Server) -> Item:
    """With its fleet keys (ByQueue), which nothing but registration writes."""
    item = server_key(server.id) | fleet_index_keys(server.id)
    for name, value in field_values(msgspec.structs.asdict(server)).items():
        if value is not None:
            item[name] = value
    return item


def server_from_item(item: Item) -> Server:
    return fields_from_item(Server, item)


# -- webhook deliveries ------------------------------------------------------------------------


def delivery_index_attributes(delivery: Mapping[str, Any]) -> dict[str, str | int | None]:
    """ByStatus while PENDING (due order), nothing once delivered or failed; the TTL always."""
    if DeliveryState(delivery["state"]) is DeliveryState.PENDING:
        sort = f"{delivery['next_attempt_at']:013d}#{delivery['task_id']}#{delivery['round']:06d}"
        return {"GSI2PK": DELIVERIES_DUE, "GSI2SK": sort, TTL: delivery["expires_at"]}
    return {"GSI2PK": None, "GSI2SK": None, TTL: delivery["expires_at"]}


def delivery_to_item(delivery: WebhookDelivery) -> Item:
    item = delivery_key(delivery.task_id, delivery.round)
    fields = msgspec.structs.asdict(delivery)
    for name, value in field_values(fields).items():
        if value is not None:
            item[name] = value
    for name, derived in delivery_index_attributes(fields).items():
        if derived is not None:
            item[name] = to_value(derived)
    return item


def delivery_from_item(item: Item) -> WebhookDelivery:
    return fields_from_item(WebhookDelivery, item)

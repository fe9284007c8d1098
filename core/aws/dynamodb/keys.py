"""The key layout of the table: every partition and sort key, and every index key prefix, is
built (or recognised) here and nowhere else. The layout is the package's access-pattern table;
template.yaml names the key attributes, the indexes and the streams' filter on `SK = TASK`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.domain.models import TaskStatus

if TYPE_CHECKING:
    from core.aws.dynamodb.items import Item

# Sorts after every character a task id may hold ([A-Za-z0-9_-]).
HIGHEST = "~"
# The sort key of a task item (template.yaml's stream filters select it).
TASK = "TASK"
# The sort key of a task's large result and error, beside the task item, as versions before
# the payload bucket held them: read (pattern 2), never written.
OUTCOME = "OUTCOME"
# A task's streamed output, one item per chunk in its partition: sorts before OUTCOME and TASK,
# so reading a task (SK >= OUTCOME) never reads its chunks.
CHUNK_PREFIX = "CHUNK#"
# The sort key of a server item: each server is its own partition (`SERVER#<id>`), as claims
# and releases write it (DynamoDB takes about 1,000 writes/s per partition).
SERVER = "SERVER"
# The ByQueue partition (keys only) that lists every server: written on registration and
# deletion only, as no other write changes a server's index keys.
FLEET = "FLEET"
# The partitions of the layout before: every server, every sequence (read by upgrade.py only).
OLD_SERVERS = "SERVERS"
OLD_SEQUENCES = "SEQUENCE"
# A sequence is spread over this many counters, each its own partition; a turn is taken from
# one at random (see DynamoSettingStore.next_in_sequence).
SEQUENCE_COUNTERS = 4
# The due index shares ByStatus with tasks, under its own partition value.
DELIVERIES_DUE = "WEBHOOK_DUE"


# The table's key attributes: partition, sort.
KEY_ATTRIBUTES = ("PK", "SK")

# Each partition-key prefix and the kind of item under it, the more specific first.
_PARTITION_KINDS = (
    ("TASK#", "task"),
    ("SERVER#", "server"),
    ("SETTINGS", "setting"),
    ("SEQUENCE", "sequence"),
    ("COUNTERBATCH#", "counter batch"),
    ("COUNTER#", "counter"),
    ("RATE#", "rate-limit window"),
    ("IDEMPOTENCY#", "idempotency key"),
)


def key(pk: str, sk: str) -> Item:
    return {"PK": {"S": pk}, "SK": {"S": sk}}


def partition_of(item: Mapping[str, Any]) -> str:
    """The partition key of a key or an item (DynamoDB JSON); "" if it has none."""
    return str(item.get("PK", {}).get("S", ""))


def partition_kind(pk: str) -> str | None:
    """What kind of item lives under the partition key `pk` (task, server, counter, ...), for
    reports of the requests made (bench/cost.py); None for the kinds it does not name."""
    return next((name for prefix, name in _PARTITION_KINDS if pk.startswith(prefix)), None)


# -- table keys --------------------------------------------------------------------------------


def task_partition(task_id: str) -> str:
    return f"TASK#{task_id}"


def task_key(task_id: str) -> Item:
    return key(task_partition(task_id), TASK)


def outcome_key(task_id: str) -> Item:
    """A task's large result and error as earlier versions stored them (read only)."""
    return key(task_partition(task_id), OUTCOME)


def chunk_key(task_id: str, index: int) -> Item:
    return key(task_partition(task_id), f"{CHUNK_PREFIX}{index:08d}")


def is_chunk_key(keys: Mapping[str, Any]) -> bool:
    """Whether a record's key attributes are an output chunk's."""
    pk, sk = keys.get("PK", {}).get("S", ""), keys.get("SK", {}).get("S", "")
    return (
        isinstance(pk, str) and pk.startswith("TASK#") and isinstance(sk, str) and sk.startswith(CHUNK_PREFIX)
    )


def is_task_key(keys: Mapping[str, Any]) -> bool:
    """Whether a record's key attributes (DynamoDB JSON) are a task item's."""
    pk, sk = keys.get("PK", {}).get("S", ""), keys.get("SK", {}).get("S")
    return isinstance(pk, str) and sk == TASK and pk.startswith("TASK#")


def server_key(server_id: str) -> Item:
    return key(f"SERVER#{server_id}", SERVER)


def fleet_index_keys(server_id: str) -> Item:
    """A server item's ByQueue keys: the fleet partition, sorted by id."""
    return {"GSI5PK": {"S": FLEET}, "GSI5SK": {"S": server_id}}


def setting_key(name: str) -> Item:
    return key("SETTINGS", name)


def sequence_key(name: str, counter: int) -> Item:
    """One of a sequence's SEQUENCE_COUNTERS counters (0-based)."""
    return key(f"SEQUENCE#{name}#{counter}", "SEQUENCE")


def counter_key(counters: str) -> Item:
    return key(f"COUNTER#{counters}", "COUNTER")


def counters_name(item: Item) -> str:
    return item["PK"]["S"].removeprefix("COUNTER#")


def counter_batch_key(batch: str) -> Item:
    return key(f"COUNTERBATCH#{batch}", "COUNTERBATCH")


def rate_key(window: str) -> Item:
    return key(f"RATE#{window}", "RATE")


def idempotency_key(idempotency: str) -> Item:
    return key(f"IDEMPOTENCY#{idempotency}", "IDEMPOTENCY")


def delivery_partition(task_id: str) -> str:
    return f"WEBHOOK#{task_id}"


def delivery_key(task_id: str, round_: int) -> Item:
    return key(delivery_partition(task_id), f"DELIVERY#{round_:06d}")


def connection_key(connection_id: str) -> Item:
    return key(f"CONN#{connection_id}", "CONN")


def connection_id_of(item: Item) -> str:
    return item["PK"]["S"].removeprefix("CONN#")


def subscriptions_partition(task_id: str) -> str:
    return f"SUBS#{task_id}"


def subscription_key(task_id: str, connection_id: str) -> Item:
    return key(subscriptions_partition(task_id), f"CONN#{connection_id}")


# Connections closed at their token's expiry are listed by the hour they expire in; the sweeper
# reads the few hours a connection can still be open in (API Gateway ends each within two).
EXPIRY_BUCKET_S = 3600


def connection_expiry_partition(expires_s: int) -> str:
    return f"WSEXP#{expires_s // EXPIRY_BUCKET_S}"


def connection_expiry_key(connection_id: str, expires_s: int) -> Item:
    """Sorted by expiry within its hour, so `SK < <now + 1:10>` is what has expired."""
    return key(connection_expiry_partition(expires_s), f"{expires_s:010d}#{connection_id}")


def connection_expiry_of(item: Item) -> tuple[str, int]:
    """(connection id, expiry in epoch seconds) of an expiry item's key."""
    expires, connection_id = item["SK"]["S"].split("#", 1)
    return connection_id, int(expires)


# -- index keys --------------------------------------------------------------------------------


def owner_partition(owner: str) -> str:
    """ByOwner (GSI1PK)."""
    return f"OWNER#{owner}"


def server_partition(server_id: str) -> str:
    """ByServer (GSI3PK): the tasks PROCESSING on a server."""
    return f"SERVER#{server_id}"


def recent_partition(status: TaskStatus) -> str:
    """ByRecent (GSI4PK): one partition per task status."""
    return f"RECENT#{status.value}"


# The one partition of the scheduler's counts: owner queues and owners' tasks in flight.
SCHEDULING = "SCHEDULING"
OWNER_QUEUE_PREFIX = "QUEUE#"
IN_FLIGHT_PREFIX = "INFLIGHT#"


def owner_queue_key(queue: str, priority: int, owner: str) -> Item:
    return key(SCHEDULING, f"{OWNER_QUEUE_PREFIX}{10 - priority:02d}#{queue}#{owner}")


def in_flight_key(owner: str) -> Item:
    return key(SCHEDULING, f"{IN_FLIGHT_PREFIX}{owner}")


def owner_queue_partition(queue: str, priority: int, owner: str) -> str:
    """The ByQueue partition of an owner queue (one FIFO per capability set, priority, owner)."""
    return f"QUEUE#{queue}#{10 - priority:02d}#{owner}"


def pending_prefix(priority: int) -> str:
    """The start of a PENDING task's ByStatus sort key: highest priority sorts first."""
    return f"{10 - priority:02d}#"

"""DynamoDB adapter of the Store: one table, on-demand, every key a string (`PK`, `SK`), TTL
on `expiresAt` (epoch seconds). The table is the `Table` resource in template.yaml.

One module per entity, each method naming its pattern (row) in the access-pattern table
below, around what they share:

| Module              | What                                                              |
|---------------------|-------------------------------------------------------------------|
| keys.py             | every key and index-key layout (the tables below, in code)        |
| items.py            | attribute values; `to_item` / `from_item`; derived index keys     |
| _expressions.py     | update and condition expressions with placeholders                |
| _requests.py        | conditional writes, transactions, paged queries; error translation |
| tasks.py            | patterns 1-5: create, read, transition, claim, release            |
| task_queries.py     | patterns 6-9b: the task indexes                                   |
| scheduling.py       | patterns 7a, 9c, 33-35: the scheduler's owner queues and counts   |
| servers.py          | patterns 10-13                                                    |
| settings.py         | patterns 14-15                                                    |
| counters.py         | patterns 16, 19                                                   |
| rate_windows.py     | pattern 17                                                        |
| idempotency.py      | pattern 18                                                        |
| connections.py      | patterns 20-25a (WebSocket connections; not part of the Store)    |
| deliveries.py       | patterns 26-29                                                    |
| output.py           | patterns 30-31: a task's streamed output                          |
| stream_records.py   | the table's stream records, read as task changes                  |

| Item        | PK                | SK          | Other attributes                              |
|-------------|-------------------|-------------|-----------------------------------------------|
| Task        | TASK#<id>         | TASK        | Task fields; GSI1-3 keys; expiresAt when done |
| Server      | SERVER#<id>       | SERVER      | Server fields; GSI5 keys FLEET, <id>          |
| Setting     | SETTINGS          | <name>      | value (JSON)                                  |
| Sequence    | SEQUENCE#<name>#<i> | SEQUENCE  | n (one of SEQUENCE_COUNTERS, i = 0..3)        |
| Counters    | COUNTER#<key>     | COUNTER     | one number per counter name; expiresAt        |
| Rate window | RATE#<key>        | RATE        | hits; expiresAt                               |
| Idempotency | IDEMPOTENCY#<key> | IDEMPOTENCY | body_hash, task_id; expiresAt                 |
| Delivery    | WEBHOOK#<task id> | DELIVERY#<round:6> | WebhookDelivery fields; GSI2 while due; expiresAt |
| Connection  | CONN#<conn>       | CONN        | sub, roles, tasks (string set); expiresAt     |
| Subscription| SUBS#<task>       | CONN#<conn> | connection_id; expiresAt                      |
| Conn. expiry| WSEXP#<exp hour>  | <exp:10>#<conn> | expiresAt (exp + 2 h); only while a token |
|             |                   |             | ends it before API Gateway's 2 h limit        |
| Owner queue | SCHEDULING        | QUEUE#<10-p:2>#<caps>#<owner> | pending (count), queue, priority, owner |
| In flight   | SCHEDULING        | INFLIGHT#<owner> | processing (count), owner, changed_at    |
| Chunk       | TASK#<id>         | CHUNK#<index:8> | data (JSON), attempt, created_at; expiresAt |
| Outcome     | TASK#<id>         | OUTCOME     | result, error: read only, as older versions wrote them |

Each server is its own partition: a partition (and an item) takes about 1,000 writes/s, and
every claim and release writes its server, so the fleet's claims scale with its servers. The
fleet is listed through ByQueue's FLEET partition (keys only, written on registration and
deletion alone), then read with consistent BatchGetItems (pattern 12). A round-robin sequence is
spread the same way over SEQUENCE_COUNTERS items, a turn taken from one at random.

Sparse global secondary indexes: ByStatus and ByServer project whole tasks (dispatch reads
payloads there), ByOwner and ByRecent a task's summary, ByQueue keys only (the scheduler reads
the few tasks it picks from the table). This adapter derives their keys from the task on every
task write: set while the state needs them, removed otherwise.

| Index    | PK                | SK                                         | Present while |
|----------|-------------------|--------------------------------------------|---------------|
| ByOwner  | GSI1PK OWNER#<o>  | GSI1SK <createdAt:13>#<id>                 | always        |
| ByStatus | GSI2PK PENDING    | GSI2SK <10-priority:2>#<queuedAt:13>#<id>  | PENDING       |
| ByStatus | GSI2PK PROCESSING | GSI2SK <deadline:13, 9999999999999>#<id>   | PROCESSING    |
| ByServer | GSI3PK SERVER#<s> | GSI3SK <id>                                | PROCESSING    |
| ByStatus | GSI2PK WEBHOOK_DUE | GSI2SK <nextAttemptAt:13>#<task>#<round:6> | delivery PENDING |
| ByRecent | GSI4PK RECENT#<st>| GSI4SK <createdAt:13>#<id>                 | always        |
| ByQueue  | GSI5PK QUEUE#<caps>#<10-p:2>#<owner> | GSI5SK <readyAt:13>#<id> | PENDING       |
| ByQueue  | GSI5PK FLEET      | GSI5SK <server id>                         | a server item |

`<caps>` is the task's capability set as a queue key (its labels sorted, comma-joined; empty
for none) and `readyAt` is max(queuedAt, notBefore): each ByQueue partition is one owner queue's
FIFO (docs/SCHEDULING.md).

A finished task carries expiresAt (its `expires_at`) and TTL drops it. Index reads are
eventually consistent; every write is conditional on the base item, so a stale index entry
costs a lost write (StaleWriteError), never a wrong one.

| Access pattern              | Index    | Key condition                     | Example           |
|-----------------------------|----------|-----------------------------------|-------------------|
| 1 Create a task             | table    | TASK#<id> / TASK, if new          | TASK#t-1          |
| 2 Get a task                | table    | PK = TASK#<id> AND SK >= OUTCOME  | TASK#t-1          |
|   (and an OUTCOME an older  |          | (chunks sort before: never read)  |                   |
|   version wrote, if any)    |          |                                   |                   |
| 3 Transition a task         | table    | TASK#<id> / TASK, if status IN    | TASK#t-1          |
| 4 Claim a task: one write   | table    | SERVER#<s> if a slot is free,     | SERVER#gpu-1,     |
|                             |          | + TASK#<id> if still PENDING      | TASK#t-1          |
| 5 Release a task: one write | table    | TASK#<id> if PROCESSING on <s>,   | TASK#t-1,         |
|                             |          | + SERVER#<s> (slot, counters)     | SERVER#gpu-1      |
| 6 Tasks of an owner, newest | ByOwner  | GSI1PK = OWNER#<owner>, desc.     | OWNER#alice       |
| 7 (retired: the scheduler   |          |                                   |                   |
|   reads owner queues, 33)   |          |                                   |                   |
| 7a Pending, queued before   | ByStatus | GSI2PK = PENDING AND GSI2SK       | 03#, 03#17000..#~ |
|    (queue timeouts)         |          | BETWEEN <10-p># AND <10-p>#<t>#~, |                   |
|                             |          | one Query per priority            |                   |
| 8 Processing past deadline  | ByStatus | GSI2PK = PROCESSING AND           | PROCESSING,       |
|                             |          | GSI2SK <= <before:13>#~           | 1700000000000#~   |
| 9 Processing on a server    | ByServer | GSI3PK = SERVER#<id>              | SERVER#gpu-1      |
| 9a Tasks newest first       | ByRecent | GSI4PK = RECENT#<status> AND      | RECENT#COMPLETED, |
|    (one status, or all six  |          | GSI4SK < <before>, descending     | 1700000000000#t-9 |
|    partitions merged)       |          |                                   |                   |
| 9b An owner's, one status   | ByOwner  | pattern 6, FilterExpression on    | OWNER#alice       |
|                             |          | status; at most 1,000 read a call |                   |
| 9c PENDING per priority     | table    | pattern 33, counts summed         | SCHEDULING        |
|    ... and capability set   | table    | the same, by the queue's caps     | SCHEDULING        |
| 10 Register a server        | table    | SERVER#<id> / SERVER, if new      | SERVER#gpu-1      |
| 11 Get, update, delete one  | table    | SERVER#<id> / SERVER,             | SERVER#gpu-1      |
|                             |          | update if version = :v            |                   |
| 12 List servers, by id      | ByQueue  | GSI5PK = FLEET (keys only); then  | FLEET             |
|                             | table    | BatchGet SERVER#<id>, consistent, | SERVER#gpu-1      |
|                             |          | 100 a request                     |                   |
| 13 Reconcile a slot count   | table    | SERVER#<id> / SERVER,             | SERVER#gpu-1      |
|                             |          | if active_tasks = :expected (and  |                   |
|                             |          | last_claim_at = :last, if given)  |                   |
| 14 Get, put a setting       | table    | SETTINGS / <name>                 | lb_algorithm      |
| 15 Next in a sequence       | table    | SEQUENCE#<name>#<i> / SEQUENCE,   | SEQUENCE#         |
|                             |          | i at random of 4, ADD n :1        | round_robin#2     |
| 16 Add to, read counters    | table    | COUNTER#<key> / COUNTER; BatchGet | COUNTER#<day>     |
| 17 Count a rate-window hit  | table    | RATE#<key> / RATE, ADD hits :1    | RATE#<sub>#<bucket>#<min> |
| 18 Claim an idempotency key | table    | IDEMPOTENCY#<key>, if new or      | IDEMPOTENCY#<key> |
|                             |          | expiresAt <= :now                 |                   |
| 19 Add a counter batch once | table    | COUNTERBATCH#<id>#<n>, if new or  | COUNTERBATCH#9f2e#0 |
|                             |          | expiresAt <= :now,                |                   |
|                             |          | + up to 99 COUNTER#<key> ADDs     |                   |
| 20 Open a WebSocket conn.   | table    | CONN#<conn> / CONN (BatchWrite    | CONN#R2D2dcQ5oA=, |
|                             |          | with its expiry item, if any)     | WSEXP#472222      |
| 21 Get a connection         | table    | CONN#<conn> / CONN, consistent    | CONN#R2D2dcQ5oA=  |
| 22 Subscribe to a task      | table    | CONN#<conn>: ADD tasks if open    | CONN#R2D2dcQ5oA=, |
|                             |          | and size(tasks) < max; then put   | SUBS#t-1 /        |
|                             |          | SUBS#<task> / CONN#<conn>; then   | CONN#R2D2dcQ5oA=, |
|                             |          | TASK#<task>: SET followed if      | TASK#t-1          |
|                             |          | it exists                         |                   |
| 23 Unsubscribe, end one     | table    | delete SUBS#<task> / CONN#<conn>; | SUBS#t-1          |
|                             |          | CONN#<conn>: DELETE tasks if open |                   |
| 24 Subscribers of a task    | table    | PK = SUBS#<task>, consistent      | SUBS#t-1          |
| 25 Close a connection       | table    | delete CONN#<conn> (ALL_OLD), then| CONN#R2D2dcQ5oA=  |
|                             |          | BatchWrite delete its SUBS items  |                   |
|                             |          | and its expiry item               |                   |
| 25a Connections past exp    | table    | PK = WSEXP#<hour> AND SK <        | WSEXP#472222,     |
|    (the sweeper; the three  |          | <now+1:10>, for each hour of the  | 1700000001        |
|    hours one can be open in)|          | last two and this one             |                   |
| 26 Put a webhook delivery   | table    | WEBHOOK#<task> / DELIVERY#<r>;    | WEBHOOK#t-1       |
|                             |          | with pattern 3 or 5 when finishing |                  |
| 27 Deliveries of a task     | table    | PK = WEBHOOK#<task>               | WEBHOOK#t-1       |
| 28 Deliveries due           | ByStatus | GSI2PK = WEBHOOK_DUE AND          | WEBHOOK_DUE,      |
|                             |          | GSI2SK <= <now:13>#~              | 1700000000000#~   |
| 29 Claim, settle a delivery | table    | WEBHOOK#<task> / DELIVERY#<r>, if | WEBHOOK#t-1       |
|                             |          | state = pending AND attempts = :n |                   |
| 30 Append an output chunk   | table    | TASK#<id> / TASK if PROCESSING on | TASK#t-1,         |
|                             |          | <s>, attempt <a>, output_chunks = | CHUNK#00000003    |
|                             |          | <n>: ADD 1; + put CHUNK#<n>: one  |                   |
|                             |          | transaction                       |                   |
| 31 Chunks after <i>         | table    | PK = TASK#<id> AND SK BETWEEN     | TASK#t-1          |
|                             |          | CHUNK#<i+1> AND CHUNK#~, consist. |                   |
| 33 Owner queues and counts  | table    | PK = SCHEDULING AND begins_with(  | SCHEDULING,       |
|    (ADD pending ±1 in the   |          | SK, QUEUE#), consistent; ADD in   | QUEUE#05#gpu#alice|
|    writes of 1, 3, 4, 5)    |          | the task's own transaction        |                   |
| 34 Owners' tasks in flight  | table    | PK = SCHEDULING AND begins_with(  | SCHEDULING,       |
|    (ADD processing ±1 in 4, |          | SK, INFLIGHT#); the claim's ADD   | INFLIGHT#alice    |
|    5; set by reconciliation)|          | if processing < :limit            |                   |
| 35 An owner queue's FIFO    | ByQueue  | GSI5PK = QUEUE#<caps>#<10-p>#<o>  | QUEUE#gpu#05#alice|
|    (keys only; the tasks in |          | AND GSI5SK > <after>, Limit 16;   |                   |
|    one BatchGetItem)        | table    | then TASK#<id> / TASK, consistent | TASK#t-1          |

Patterns 20-25a are `connections.py` (AWS only; one machine follows tasks in memory). A task's
stream records carry its changes to the WebSocket notifier and the statistics; both read them
through `stream_records.task_change`.

Nothing scans. Throttling and timeouts (after botocore's own retries) become UnavailableError;
a failed condition becomes StaleWriteError or NoCapacityError.
"""

from __future__ import annotations

from core.aws.dynamodb.counters import DynamoCounterStore
from core.aws.dynamodb.deliveries import DynamoDeliveryStore
from core.aws.dynamodb.idempotency import DynamoIdempotencyStore
from core.aws.dynamodb.output import DynamoOutputStore
from core.aws.dynamodb.rate_windows import DynamoRateWindowStore
from core.aws.dynamodb.scheduling import DynamoSchedulingStore
from core.aws.dynamodb.servers import DynamoServerStore
from core.aws.dynamodb.settings import DynamoSettingStore
from core.aws.dynamodb.task_queries import DynamoTaskQueries
from core.aws.dynamodb.tasks import DynamoTaskWrites
from core.ports.storage import Store

__all__ = ["DynamoStore"]


class DynamoStore(
    DynamoTaskWrites,
    DynamoSchedulingStore,
    DynamoTaskQueries,
    DynamoOutputStore,
    DynamoServerStore,
    DynamoSettingStore,
    DynamoCounterStore,
    DynamoRateWindowStore,
    DynamoIdempotencyStore,
    DynamoDeliveryStore,
    Store,
):
    """The Store on one table: `DynamoStore(table_name, client=None)` (the client is created
    once per process when not given; Lambda reuses it)."""

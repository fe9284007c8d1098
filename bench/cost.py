"""DynamoDB and SQS requests per task on the AWS code path, counted under moto, and what a
million tasks cost at on-demand prices.

The Lambda handlers run in this process as separate containers would (each module keeps its
own Context), fed the events API Gateway and the SQS event source mapping would send:

    create     POST /api/task through handlers.tasks (events/api-create-task.json)
    dispatch   handlers.dispatcher fed the message create sent (shaped like
               events/sqs-dispatch.json); the backend, a thread on loopback, answers 202
    progress   PUT /api/task/{id} {"progress": 50} with the task's callback token
    complete   PUT /api/task/{id} {"status": "COMPLETED", "result": ...}
    drain      handlers.dispatcher fed the drain hint that completion sent (a freed slot)
    get        GET /api/task/{id} by the owner
    statistics the table's stream, through each consumer's filter (template.yaml): the
               statistics function, and the WebSocket notifier (nobody follows these tasks,
               so its filter passes nothing: it is neither invoked nor reads the table)

Every request any botocore client makes is seen by handlers appended to botocore's
BUILTIN_HANDLERS (as moto does; every session and client created afterwards has them):
`before-call` counts it, `before-parameter-build` / `after-call` read the items it writes
before and after (with an uncounted client) to size its write and read units. Rate limits are
on, as deployed: each authenticated request is counted in the table, a container serving many
of one principal's requests in leased blocks (core/services/rate_leases.py).

Scenarios: `alone`, one task with every per-container cache cold (the fleet view read again at
each step: traffic under one task a second); `burst`, --burst tasks created together, their
messages delivered in batches of 10, then each reported, completed and read (per-task means).

    python -m bench.cost [--burst 10] [--result-bytes 200] [--payload-bytes 1024]
    python -m bench.cost --json

--json runs the burst for a 1 KB and a 64 KB payload, and for a 1 KB payload with a 64 KB
result, and ends with one line, a JSON object: {"payload_1kb": {"requests_per_task",
"wru_per_task", "rru_per_task", "usd_per_million", ...}, "payload_64kb": {...}, "result_64kb":
{...}}, requests being DynamoDB + SQS requests of our code per task.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from bench.coldstart import source_tree
from tests.support.aws import load_template

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
SECRET = "bench-cost-secret-" * 3
REGION = "us-east-1"
STEPS = ("create", "dispatch", "progress", "complete", "drain", "get", "statistics")
TARGET_REQUESTS = 10

# Public on-demand prices, us-east-1, as of 2025 (from the pricing pages below as the author
# knew them; this machine has no internet): check the pricing pages before relying on them.
PRICES_AS_OF = "2025 (check the pricing pages)"
PRICES = {
    # https://aws.amazon.com/api-gateway/pricing/ : HTTP APIs, first 300 million a month.
    "apigw_http_per_million": 1.00,
    # https://aws.amazon.com/lambda/pricing/ : requests; duration, Arm, first 7.5 billion GB-s.
    "lambda_per_million_requests": 0.20,
    "lambda_arm_per_gb_s": 0.0000133334,
    "lambda_x86_per_gb_s": 0.0000166667,
    # https://aws.amazon.com/dynamodb/pricing/on-demand/ : since the 2024-11-01 price cut.
    "ddb_per_million_wru": 0.625,
    "ddb_per_million_rru": 0.125,
    # https://aws.amazon.com/sqs/pricing/ : standard queue, per 64 KB chunk of a request.
    "sqs_per_million": 0.40,
    # https://aws.amazon.com/s3/pricing/ : S3 Standard, PUT $0.005 and GET $0.0004 per 1,000
    # (large payloads; their storage, a few days of 64 KB, is under a cent per million tasks).
    "s3_put_per_million": 5.00,
    "s3_get_per_million": 0.40,
}
# Lambda duration model (assumed, not measured: moto answers in-process): own work per
# invocation, plus one in-region round trip per DynamoDB or SQS request, plus the predict call.
DURATION_BASE_MS = 4.0
DURATION_PER_REQUEST_MS = 6.0
DURATION_PREDICT_MS = 20.0
# The event source mapping's own SQS requests per batch (billed, not made by our code).
ESM_REQUESTS_PER_BATCH = 2  # ReceiveMessage + DeleteMessageBatch


# -- item sizes and capacity units ---------------------------------------------------------


def value_size(value: dict[str, Any]) -> int:
    """Bytes of one attribute value by DynamoDB's item size rules (numbers approximated)."""
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in inner.items())
    if kind == "SS":
        return sum(len(v.encode()) for v in inner)
    if kind == "NS":
        return sum(value_size({"N": v}) for v in inner)
    raise ValueError(kind)


def item_size(item: dict[str, Any] | None) -> int:
    return 0 if not item else sum(len(name.encode()) + value_size(v) for name, v in item.items())


def write_units(before: dict[str, Any] | None, after: dict[str, Any] | None) -> int:
    """1 WRU per KB of the larger image, at least 1."""
    return max(1, math.ceil(max(item_size(before), item_size(after)) / 1024))


# Each index entry: the projected attributes plus 100 bytes of index overhead.
INDEX_OVERHEAD = 100
# What each index projects (template.yaml): None for ALL, else the attributes it carries
# besides the table's and its own keys. Set by main() from the template.
PROJECTIONS: dict[str, frozenset[str] | None] = {}


def projected(index: str, keys: tuple[str, str], item: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of `item` an index entry holds."""
    carried = PROJECTIONS.get(index)
    if item is None or carried is None:
        return item
    kept = carried | set(keys) | {"PK", "SK"}
    return {name: value for name, value in item.items() if name in kept}


def index_writes(
    indexes: dict[str, tuple[str, str]], before: dict[str, Any] | None, after: dict[str, Any] | None
) -> dict[str, int]:
    """WRU of each global secondary index for one table write: an entry added, removed or
    updated in place is one write; a moved key is two (delete + put)."""
    found = {}
    for name, keys in indexes.items():
        old = before is not None and all(k in before for k in keys)
        new = after is not None and all(k in after for k in keys)
        old_entry, new_entry = projected(name, keys, before), projected(name, keys, after)
        size = max(item_size(old_entry) if old else 0, item_size(new_entry) if new else 0) + INDEX_OVERHEAD
        units = math.ceil(size / 1024)
        if old and new:
            moved = any(before[k] != after[k] for k in keys)  # type: ignore[index]
            writes = 2 if moved else (1 if old_entry != new_entry else 0)
        else:
            writes = int(old or new)
        if writes:
            found[name] = writes * units
    return found


def read_units(items: list[dict[str, Any]], consistent: bool) -> float:
    """A GetItem or Query (or one key of a BatchGetItem): the items' total size in 4 KB units, at least 1; half for
    eventually consistent reads."""
    units = max(1, math.ceil(sum(item_size(i) for i in items) / 4096))
    return units * (1.0 if consistent else 0.5)


# -- the meter -----------------------------------------------------------------------------

BENCH = "taskgate-bench-cost"  # our key in botocore's per-request context


@dataclass
class Request:
    step: str
    actor: str  # "taskgate" (our code) or "esm" (the event source mapping)
    service: str
    operation: str
    what: str
    wru: float = 0.0
    index_wru: float = 0.0
    rru: float = 0.0
    detail: str = ""


@dataclass
class Meter:
    table: str
    key_names: tuple[str, str]
    indexes: dict[str, tuple[str, str]]
    step: str = "setup"
    actor: str = "taskgate"
    requests: list[Request] = field(default_factory=list)
    invocations: Counter[tuple[str, str]] = field(default_factory=Counter)
    inspector: Any = None
    _local: threading.local = field(default_factory=threading.local)

    @contextmanager
    def uncounted(self) -> Iterator[None]:
        self._local.off = True
        try:
            yield
        finally:
            self._local.off = False

    def _off(self) -> bool:
        return getattr(self._local, "off", False)

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Every botocore session created meanwhile (and so every client) calls this meter."""
        import botocore.handlers

        mine = [
            ("before-parameter-build", self.before_parameter_build),
            ("before-call", self.before_call),
            ("after-call", self.after_call),
        ]
        botocore.handlers.BUILTIN_HANDLERS.extend(mine)
        try:
            yield
        finally:
            for handler in mine:
                botocore.handlers.BUILTIN_HANDLERS.remove(handler)

    def record(self, service: str, operation: str, what: str) -> None:
        self.requests.append(Request(self.step, self.actor, service, operation, what))

    # botocore event handlers

    def before_parameter_build(
        self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        if self._off():
            return
        context[BENCH] = {"params": copy.deepcopy(params), "before": self._images(model.name, params)}

    def before_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        if self._off():
            return
        params = context[BENCH]["params"]
        request = Request(
            self.step, self.actor, model.service_model.service_name, model.name, describe(model.name, params)
        )
        context[BENCH]["request"] = request
        self.requests.append(request)

    def after_call(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        bench = context.get(BENCH)
        if self._off() or not bench or "request" not in bench:
            return
        request: Request = bench["request"]
        params = bench["params"]
        if request.service != "dynamodb":
            return
        if bench["before"] is not None:
            after = self._images(model.name, params) or {}
            factor = 2 if model.name == "TransactWriteItems" else 1
            sizes = []
            for key, old in bench["before"].items():
                new = after[key]
                request.wru += factor * write_units(old, new)
                request.index_wru += sum(index_writes(self.indexes, old, new).values())
                sizes.append(str(max(item_size(old), item_size(new))))
            request.detail = f"item bytes {'+'.join(sizes)}"
        elif model.name == "GetItem":
            item = parsed.get("Item")
            request.rru = read_units([item] if item else [], params.get("ConsistentRead", False))
            request.detail = f"item bytes {item_size(item)}"
        elif model.name == "Query":
            items = parsed.get("Items")
            if items is None:  # Select COUNT: the items are read all the same
                with self.uncounted():
                    query = {k: v for k, v in params.items() if k != "Select"}
                    items = self.inspector.query(**query)["Items"]
            consistent = params.get("ConsistentRead", False) and "IndexName" not in params
            request.rru = read_units(items, consistent)
            request.detail = f"{len(items)} items, {sum(item_size(i) for i in items)} bytes"
        elif model.name == "BatchGetItem":
            # Each key is read (and rounded up to 4 KB) on its own; one not found still costs a unit.
            ((table, batch),) = params["RequestItems"].items()
            items = parsed.get("Responses", {}).get(table, [])
            consistent = batch.get("ConsistentRead", False)
            unprocessed = parsed.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
            missing = len(batch["Keys"]) - len(items) - len(unprocessed)
            request.rru = (
                sum(read_units([item], consistent) for item in items) + read_units([], consistent) * missing
            )
            request.detail = f"{len(items)} items, {sum(item_size(i) for i in items)} bytes"

    def _images(self, operation: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The items a write touches, as they are now (None: not a write)."""
        keys = write_keys(operation, params, self.key_names)
        if keys is None:
            return None
        images = {}
        with self.uncounted():
            for key in keys:
                found = self.inspector.get_item(TableName=self.table, Key=key, ConsistentRead=True)
                images[json.dumps(key, sort_keys=True)] = found.get("Item")
        return images


def write_keys(operation: str, params: dict[str, Any], names: tuple[str, str]) -> list[dict[str, Any]] | None:
    def key_of(entry: dict[str, Any]) -> dict[str, Any]:
        source = entry.get("Key") or entry["Item"]
        return {name: source[name] for name in names}

    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        return [key_of(params)]
    if operation == "TransactWriteItems":
        return [key_of(next(iter(entry.values()))) for entry in params["TransactItems"]]
    return None


def _pk(entry: dict[str, Any]) -> str:
    from core.aws.dynamodb import keys

    return keys.partition_of(entry.get("Key") or entry.get("Item") or {})


def kind(pk: str) -> str:
    from core.aws.dynamodb import keys

    return keys.partition_kind(pk) or pk or "?"


def describe(operation: str, params: dict[str, Any]) -> str:
    """What a request is for, from the keys it names."""
    from core.aws.dynamodb import keys

    if operation == "SendMessage":
        body = json.loads(params["MessageBody"])
        delay = f", delay {params['DelaySeconds']} s" if params.get("DelaySeconds") else ""
        return {"taskId": "task message", "drain": "drain hint", "checkServer": "check-server hint"}.get(
            next(iter(body)), "message"
        ) + delay
    if operation in ("PutObject", "GetObject"):
        return "large payload (S3)"
    if operation in ("ReceiveMessage", "DeleteMessage", "DeleteMessageBatch"):
        return "event source mapping"
    if operation == "TransactWriteItems":
        return " + ".join(kind(_pk(next(iter(e.values())))) for e in params["TransactItems"])
    if operation == "Query":
        values: dict[str, dict[str, str]] = params.get("ExpressionAttributeValues", {})
        value = next(iter(values.values()), {}).get("S", "")
        if params.get("IndexName") == "ByQueue" and value == keys.FLEET:
            return "fleet (list servers)"
        return f"index {params['IndexName']}" if "IndexName" in params else kind(value)
    if operation == "BatchGetItem":
        (batch,) = params["RequestItems"].values()
        kinds = {kind(keys.partition_of(key)) for key in batch["Keys"]}
        if kinds == {"server"}:
            return "fleet (read servers)"
        return "index ByQueue (its tasks)" if kinds == {"task"} else "counters"
    what = kind(_pk(params))
    if what == "rate-limit window":  # a leased block of hits, or the closed window's count
        return f"{what}, {'closed' if operation == 'GetItem' else 'leased block'}"
    return what


# Reads and messages whose count per task falls with traffic (cached or coalesced per container).
AMORTISED = {
    "fleet (list servers)": "cached 1 s per container (FLEET_CACHE)",
    "setting": "cached 1 s per container (FLEET_CACHE)",
    "fleet (read servers)": "cached 1 s per container (FLEET_CACHE)",
    "drain hint": "at most one now and one delayed per second per container",
    "rate-limit window, leased block": "blocks of 1, 2, 4 ... up to limit/20 per container and window",
    "rate-limit window, closed": "read once per container and window",
}


def amortised(step: str, what: str) -> str | None:
    """Why a request's count per task falls under load (None: it does not)."""
    if step == "drain":
        return "runs once per drain hint"
    return AMORTISED.get(what) or AMORTISED.get(what.split(",")[0])


PURPOSES = {
    "task": "the task item (its own reads and writes)",
    "server + task": "the task item (its own reads and writes)",
    "task + server": "the task item (its own reads and writes)",
    "task message": "the task message (create)",
    "rate-limit window": "rate limits: leased blocks, and each closed window read once per container",
    "counter": "statistics counters, written inline (stats.Recorder)",
    "counter batch + counter": "statistics: one transaction per stream batch (core/aws/stream.py)",
    "counter batch + counter + counter": "statistics: one transaction per stream batch (core/aws/stream.py)",
    "setting": "settings: the algorithm, cached 1 s per container (FLEET_CACHE)",
    "fleet (list servers)": "fleet view: cached 1 s per container",
    "fleet (read servers)": "fleet view: cached 1 s per container",
    "drain hint": "drain after a freed slot: the hint and the drain it runs",
    "index ByStatus": "drain after a freed slot: the hint and the drain it runs",
    "index ByQueue (its tasks)": "index ByQueue",
}


def purposes(run: Run) -> None:
    ours = [r for r in run.meter.requests if r.actor == "taskgate" and r.step in STEPS]
    totals: Counter[str] = Counter(PURPOSES.get(r.what.split(",")[0], r.what) for r in ours)
    print(f"\n{run.name}: requests per task by purpose")
    for purpose, n in totals.most_common():
        print(f"  {n / run.tasks:5.2g}  {purpose}")


# -- the backend ---------------------------------------------------------------------------


class Backend:
    """Answers predict with 202 (an async backend) and health with 200; keeps what it got."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self._reply(202, {"status": "accepted"})

            def do_GET(self) -> None:
                self._reply(200, {"status": "ok"})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token_for(self, task_id: str) -> str:
        return str(next(r["callback_token"] for r in reversed(self.received) if r["task_id"] == task_id))


# -- the AWS side: Lambda containers, API Gateway events, the event source mapping ---------------


def lambda_context(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        function_name=name,
        function_version="$LATEST",
        invoked_function_arn=f"arn:aws:lambda:{REGION}:123456789012:function:{name}",
        memory_limit_in_mb=512,
        aws_request_id="00000000-0000-4000-8000-000000000000",
        log_group_name=f"/aws/lambda/{name}",
        log_stream_name="bench",
        get_remaining_time_in_millis=lambda: 29_000,
    )


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@dataclass
class Aws:
    meter: Meter
    sqs: Any  # uncounted inspector clients
    queue_url: str
    queue_arn: str
    functions: dict[str, ModuleType]
    stream: Any  # tools.moto_env.StreamReader over the table's stream, uncounted
    notifier_stream: Any  # the same, through the notifier's filter
    timings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        self.meter.invocations[(self.meter.step, function)] += 1
        started = time.perf_counter()
        response = self.functions[function].handler(event, lambda_context(f"taskgate-{function}"))
        self.timings[self.meter.step].append((time.perf_counter() - started) * 1000)
        return response

    def http(self, method: str, path: str, token: str, body: Any = None) -> dict[str, Any]:
        """One API Gateway (HTTP API, payload 2.0) request to the function serving it."""
        template = "api-create-task.json" if method == "POST" else "api-get-task.json"
        event = load_event(template)
        route = "/api/task/{id}" if path.count("/") == 3 else path
        event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {route}"
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        event["headers"]["authorization"] = f"Bearer {token}"
        if route.endswith("{id}"):
            event["pathParameters"] = {"id": path.rsplit("/", 1)[1]}
        if body is None:
            event.pop("body", None)
            event["headers"]["content-length"] = "0"
        else:
            event["body"] = json.dumps(body)
            event["headers"]["content-length"] = str(len(event["body"]))
        function = "servers" if path.startswith("/api/servers") else "tasks"
        response = self.invoke(function, event)
        if response["statusCode"] != 200:
            raise RuntimeError(f"{method} {path}: {response['statusCode']} {response['body']}")
        reply: dict[str, Any] = json.loads(response["body"])
        return reply

    def deliver(self, wait_delayed: bool = True) -> int:
        """The event source mapping: receive up to 10 messages, invoke the dispatcher with
        them (records shaped like events/sqs-dispatch.json), delete those that succeeded.
        Until the queue is empty, delayed messages included. Returns the batches."""
        template = load_event("sqs-dispatch.json")["Records"][0]
        batches = 0
        while True:
            with self.meter.uncounted():
                messages = self.sqs.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
                ).get("Messages", [])
                delayed = int(
                    self.sqs.get_queue_attributes(
                        QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
                    )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
                )
            if not messages:
                # Empty polls (waiting out a delay, or idle) are the mapping's fixed cost.
                if wait_delayed and delayed:
                    time.sleep(0.25)
                    continue
                return batches
            self.meter.actor = "esm"
            self.meter.record("sqs", "ReceiveMessage", "event source mapping")
            self.meter.actor = "taskgate"
            records = []
            for message in messages:
                record = copy.deepcopy(template)
                record |= {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "md5OfBody": message["MD5OfBody"],
                    "eventSourceARN": self.queue_arn,
                }
                record["attributes"].update(message.get("Attributes", {}))
                records.append(record)
            failures = self.invoke("dispatcher", {"Records": records})["batchItemFailures"]
            if failures:
                raise RuntimeError(f"dispatcher reported failures: {failures}")
            batches += 1
            with self.meter.uncounted():
                self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)
                    ],
                )
            self.meter.actor = "esm"
            self.meter.record("sqs", "DeleteMessageBatch", "event source mapping")
            self.meter.actor = "taskgate"

    def stream_batches(self) -> int:
        """Lambda's DynamoDB event source mapping: the task changes since the last call (the
        template's filter applied), handed to the statistics function 100 at a time (its
        batch size; the 5 s batching window holds a short task's whole life). Its reads of
        the stream are free for Lambda triggers and not counted. Returns the batches."""
        with self.meter.uncounted():
            records = self.stream.read(limit=1000)
            followed = self.notifier_stream.read(limit=1000)
        for start in range(0, len(records), 100):
            self.invoke("stats_stream", {"Records": records[start : start + 100]})
        for start in range(0, len(followed), 100):
            self.invoke("notifier", {"Records": followed[start : start + 100]})
        return (len(records) + 99) // 100

    def cold_caches(self) -> None:
        """As if more than FLEET_CACHE and the drain coalescing window had passed."""
        for module in self.functions.values():
            app = getattr(module, "app", None)
            if app is None and not hasattr(module, "context"):
                continue  # the notifier keeps no fleet view
            ctx = app.state.context if app is not None else module.context._context
            if ctx is not None:
                ctx.fleet.invalidate(settings=True)
                if hasattr(ctx.queue, "_last_drain"):
                    ctx.queue._last_drain = float("-inf")
                    ctx.queue._delayed_until = float("-inf")


def start_aws(meter: Meter, modules: dict[str, ModuleType]) -> Aws:
    import botocore.session

    from tests.support.aws import create_table

    session = botocore.session.get_session()
    dynamodb: Any = session.create_client("dynamodb", region_name=REGION)
    sqs: Any = session.create_client("sqs", region_name=REGION)
    with meter.uncounted():
        table = create_table(dynamodb)
        queue_url = sqs.create_queue(QueueName="taskgate-tasks")["QueueUrl"]
        session.create_client("s3", region_name=REGION).create_bucket(Bucket="taskgate-bench-payloads")
        os.environ["PAYLOAD_BUCKET"] = "taskgate-bench-payloads"
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    meter.table, meter.inspector = table, dynamodb
    os.environ["TABLE_NAME"], os.environ["QUEUE_URL"] = table, queue_url
    for module in modules.values():  # a fresh container each: no Context yet
        if hasattr(module, "app"):
            module.app.state.context = None
        elif hasattr(module, "push"):  # the notifier
            module.push.reset()
        else:
            module.context.reset()
    with meter.uncounted():
        from tools.moto_env import StreamReader, stream_filters, streams_client

        stream_arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        template = load_template()
        stream = StreamReader(streams_client(), stream_arn, stream_filters(template, "StatsStreamFunction"))
        stream.read(limit=1000)  # the registration's writes: setup, not the task's
        notifier_stream = StreamReader(
            streams_client(), stream_arn, stream_filters(template, "NotifierFunction")
        )
        notifier_stream.read(limit=1000)
    return Aws(meter, sqs, queue_url, queue_arn, modules, stream, notifier_stream)


# -- scenarios -----------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    tasks: int
    meter: Meter
    timings: dict[str, list[float]]


def scenario(
    name: str, tasks: int, result_bytes: int, indexes: dict[str, tuple[str, str]], payload_bytes: int = 0
) -> Run:
    from moto import mock_aws

    from core.aws.dynamodb import keys
    from core.domain import auth
    from tools.moto_env import one_request_at_a_time

    meter = Meter(table="", key_names=keys.KEY_ATTRIBUTES, indexes=indexes)
    backend = Backend()
    body = json.loads(load_event("api-create-task.json")["body"])
    if payload_bytes:  # the example payload, padded to about that many bytes of JSON
        padding = max(0, payload_bytes - len(json.dumps(body["payload"])) - len(', "padding": ""'))
        body["payload"] = {**body["payload"], "padding": "x" * padding}
    result = {"output_url": "https://example.com/out.mp4", "notes": "x" * max(0, result_bytes - 60)}
    with one_request_at_a_time(), mock_aws(), meter.installed():
        import importlib

        modules = {
            n: importlib.import_module(f"handlers.{n}")
            for n in ("tasks", "servers", "dispatcher", "stats_stream", "notifier")
        }
        aws = start_aws(meter, modules)
        admin = auth.mint(SECRET, sub="root", roles=["admin"], ttl_s=3600)
        user = auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=3600)
        server = {
            "id": "gpu-1",
            "name": "gpu-1",
            "endpoints": {"predict": f"{backend.url}/predict", "health": f"{backend.url}/health"},
            "maxConcurrent": 64,
            "capabilities": ["video"],
        }
        aws.http("POST", "/api/servers", admin, server)
        aws.deliver()  # the check-server and drain hints of the registration

        alone = name == "alone"
        ids: list[str] = []
        for step in STEPS:
            if alone:
                aws.cold_caches()
            meter.step = step
            if step == "create":
                ids = [aws.http("POST", "/api/task", user, body)["id"] for _ in range(tasks)]
            elif step in ("dispatch", "drain"):
                aws.deliver()
            elif step == "progress":
                for task_id in ids:
                    aws.http("PUT", f"/api/task/{task_id}", backend.token_for(task_id), {"progress": 50})
            elif step == "complete":
                for task_id in ids:
                    report = {"status": "COMPLETED", "result": result}
                    aws.http("PUT", f"/api/task/{task_id}", backend.token_for(task_id), report)
            elif step == "statistics":
                aws.stream_batches()
            elif step == "get":
                for task_id in ids:
                    got = aws.http("GET", f"/api/task/{task_id}", user)
                    if got["status"] != "COMPLETED":
                        raise RuntimeError(f"task {task_id} is {got['status']}")
        meter.step = "after"
    backend.server.shutdown()
    return Run(name, tasks, meter, aws.timings)


# -- report --------------------------------------------------------------------------------


OPERATIONS = (
    "GetItem",
    "Query",
    "PutItem",
    "UpdateItem",
    "TransactWriteItems",
    "BatchGetItem",
    "SendMessage",
    "PutObject",
    "GetObject",
)


def per_task(run: Run, requests: list[Request]) -> float:
    return len(requests) / run.tasks


def request_table(run: Run) -> None:
    ours = [r for r in run.meter.requests if r.actor == "taskgate" and r.step in STEPS]
    print(f"\n### {run.name}: requests by step and operation, per task ({run.tasks} task(s))\n")
    print(
        "| step | " + " | ".join(OPERATIONS) + " | total | WRU (table) | WRU (indexes) | RRU | invocations |"
    )
    print("|---" * (len(OPERATIONS) + 6) + "|")
    for step in STEPS:
        mine = [r for r in ours if r.step == step]
        counts = Counter(r.operation for r in mine)
        invoked = ", ".join(
            f"{f} {n / run.tasks:g}" for (s, f), n in sorted(run.meter.invocations.items()) if s == step
        )
        print(
            f"| {step} | "
            + " | ".join(f"{counts[o] / run.tasks:g}" if counts[o] else "" for o in OPERATIONS)
            + f" | {len(mine) / run.tasks:g} | {sum(r.wru for r in mine) / run.tasks:g}"
            f" | {sum(r.index_wru for r in mine) / run.tasks:g} | {sum(r.rru for r in mine) / run.tasks:g}"
            f" | {invoked} |"
        )
    counts = Counter(r.operation for r in ours)
    print(
        "| **total** | "
        + " | ".join(f"{counts[o] / run.tasks:g}" if counts[o] else "" for o in OPERATIONS)
        + f" | **{len(ours) / run.tasks:g}** | {sum(r.wru for r in ours) / run.tasks:g}"
        f" | {sum(r.index_wru for r in ours) / run.tasks:g} | {sum(r.rru for r in ours) / run.tasks:g} | |"
    )
    print(f"\n{run.name}: what the requests are for, per task:")
    by_what: Counter[tuple[str, str, str]] = Counter((r.step, r.operation, r.what) for r in ours)
    for (step, operation, what), n in by_what.items():
        note = f"  [amortised: {amortised(step, what)}]" if amortised(step, what) else ""
        sample = next(r for r in ours if (r.step, r.operation, r.what) == (step, operation, what))
        units = (
            f"WRU {sample.wru:g} + index {sample.index_wru:g}"
            if sample.wru
            else (f"RRU {sample.rru:g}" if sample.rru else "")
        )
        print(
            f"  {step:9s} {n / run.tasks:5.2g} x {operation:19s} {what:32s} {units:22s} {sample.detail}{note}"
        )
    esm = [r for r in run.meter.requests if r.actor == "esm" and r.step in STEPS]
    print(
        f"  event source mapping (AWS's, billed): {len(esm) / run.tasks:g} per task ({Counter(r.operation for r in esm)})"
    )


def cost(run: Run, memory_mb: int, architecture: str) -> dict[str, float]:
    ours = [r for r in run.meter.requests if r.actor == "taskgate" and r.step in STEPS]
    esm = [r for r in run.meter.requests if r.actor == "esm" and r.step in STEPS]
    http = sum(n for (s, f), n in run.meter.invocations.items() if s in STEPS and f in ("tasks", "servers"))
    invocations = sum(n for (s, f), n in run.meter.invocations.items() if s in STEPS)
    duration_ms = (
        invocations * DURATION_BASE_MS
        + len(ours) * DURATION_PER_REQUEST_MS
        + run.tasks * DURATION_PREDICT_MS  # one predict call per task
    )
    gb_s = duration_ms / 1000 * memory_mb / 1024
    per_gb_s = PRICES["lambda_arm_per_gb_s" if architecture == "arm64" else "lambda_x86_per_gb_s"]
    sqs_requests = sum(r.service == "sqs" for r in ours) + len(esm)
    puts = sum(r.operation == "PutObject" for r in ours)
    gets = sum(r.operation == "GetObject" for r in ours)
    n = run.tasks
    return {
        "API Gateway HTTP API requests": http / n * PRICES["apigw_http_per_million"],
        "Lambda requests": invocations / n * PRICES["lambda_per_million_requests"],
        "Lambda duration": gb_s / n * per_gb_s * 1e6,
        "DynamoDB writes (table + indexes)": sum(r.wru + r.index_wru for r in ours)
        / n
        * PRICES["ddb_per_million_wru"],
        "DynamoDB reads": sum(r.rru for r in ours) / n * PRICES["ddb_per_million_rru"],
        "SQS requests (ours + event source mapping)": sqs_requests / n * PRICES["sqs_per_million"],
        "S3 requests (large payloads)": (
            puts * PRICES["s3_put_per_million"] + gets * PRICES["s3_get_per_million"]
        )
        / n,
        "_http": http / n,
        "_s3": (puts + gets) / n,
        "_invocations": invocations / n,
        "_gb_s": gb_s / n,
        "_sqs": sqs_requests / n,
        "_wru": sum(r.wru + r.index_wru for r in ours) / n,
        "_rru": sum(r.rru for r in ours) / n,
    }


def cost_table(runs: list[Run], memory_mb: int, architecture: str) -> None:
    figures = {run.name: cost(run, memory_mb, architecture) for run in runs}
    print(f"\n### cost per million tasks, USD, us-east-1 on-demand prices as of {PRICES_AS_OF}\n")
    print("| component | " + " | ".join(f"{r.name}: units per task | USD" for r in runs) + " |")
    print("|---" * (1 + 2 * len(runs)) + "|")
    units = {
        "API Gateway HTTP API requests": "_http",
        "Lambda requests": "_invocations",
        "Lambda duration": "_gb_s",
        "DynamoDB writes (table + indexes)": "_wru",
        "DynamoDB reads": "_rru",
        "SQS requests (ours + event source mapping)": "_sqs",
        "S3 requests (large payloads)": "_s3",
    }
    for component, unit in units.items():
        cells = " | ".join(f"{figures[r.name][unit]:.4g} | {figures[r.name][component]:.2f}" for r in runs)
        print(f"| {component} | {cells} |")
    totals = " | ".join(
        f" | **{sum(v for k, v in figures[r.name].items() if not k.startswith('_')):.2f}**" for r in runs
    )
    print(f"| **total** | {totals} |")
    print(
        f"\nunits: requests, invocations, GB-seconds ({memory_mb} MB, {architecture}), WRU, RRU, SQS requests."
        f" Lambda duration is modelled: {DURATION_BASE_MS:g} ms per invocation + {DURATION_PER_REQUEST_MS:g} ms"
        f" per DynamoDB/SQS request + {DURATION_PREDICT_MS:g} ms per predict call (assumed, not measured)."
    )
    print("prices used: " + ", ".join(f"{k} {v}" for k, v in PRICES.items()))


PAYLOADS = {"payload_1kb": 1024, "payload_64kb": 64 * 1024}
# A 1 KB payload with a 64 KB result, past the 32 KiB inline limit: its object's PUT when the
# task completes and its GET when the task is read, priced with the payloads' S3 requests.
LARGE_RESULT = ("result_64kb", 1024, 64 * 1024)


def by_payload(
    burst: int, result_bytes: int, indexes: dict[str, tuple[str, str]], memory_mb: int, architecture: str
) -> dict[str, dict[str, float]]:
    """The burst scenario at each payload size: its tables, then the figures the JSON line
    carries (requests per task: DynamoDB + SQS requests of our code, as the target counts)."""
    found: dict[str, dict[str, float]] = {}
    cases = [(key, size, result_bytes) for key, size in PAYLOADS.items()] + [LARGE_RESULT]
    for key, size, result_size in cases:
        name = f"burst, {size // 1024} KB payload" + (
            f", {result_size // 1024} KB result" if key == LARGE_RESULT[0] else ""
        )
        run = scenario(name, burst, result_size, indexes, size)
        request_table(run)
        cost_table([run], memory_mb, architecture)
        ours = [r for r in run.meter.requests if r.actor == "taskgate" and r.step in STEPS]
        figures = cost(run, memory_mb, architecture)
        found[key] = {
            "payload_bytes": size,
            "result_bytes": result_size,
            "requests_per_task": round(per_task(run, ours), 2),
            "wru_per_task": round(figures["_wru"], 2),
            "rru_per_task": round(figures["_rru"], 2),
            "lambda_invocations_per_task": round(figures["_invocations"], 2),
            "usd_per_million": round(sum(v for k, v in figures.items() if not k.startswith("_")), 2),
        }
    small, large = found["payload_1kb"], found["payload_64kb"]
    print(
        f"\ntargets: requests per task at 1 KB {small['requests_per_task']:g} (at most {TARGET_REQUESTS});"
        f" 64 KB costs {large['usd_per_million'] / small['usd_per_million']:.2f}x the 1 KB cost (at most 3x)"
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--burst", type=int, default=10, help="tasks in the burst scenario")
    parser.add_argument("--result-bytes", type=int, default=200, help="size of the result a backend reports")
    parser.add_argument("--payload-bytes", type=int, default=0, help="pad the example payload to this size")
    parser.add_argument(
        "--json", action="store_true", help="1 KB and 64 KB payloads; the last line is one JSON object"
    )
    args = parser.parse_args()

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "JWT_SECRET": SECRET,
            "PUBLIC_URL": "https://abc123xyz.execute-api.us-east-1.amazonaws.com",
            # The functions' own log lines and EMF blobs would bury the report (they cost no request).
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "WEBSOCKET_ENDPOINT": "https://ws123xyz.execute-api.us-east-1.amazonaws.com/prod",
        }
    )
    for name in [
        n
        for n in os.environ
        if n.startswith("AWS_ENDPOINT_URL") or n in ("AWS_PROFILE", "JWT_SECRET_PARAMETER")
    ]:
        del os.environ[name]
    asyncio.set_event_loop(asyncio.new_event_loop())  # what Mangum runs on, as in a Lambda

    template = load_template()
    table = template["Resources"]["Table"]["Properties"]
    indexes = {
        index["IndexName"]: tuple(k["AttributeName"] for k in index["KeySchema"])
        for index in table.get("GlobalSecondaryIndexes", [])
    }
    for index in table.get("GlobalSecondaryIndexes", []):
        projection = index["Projection"]
        PROJECTIONS[index["IndexName"]] = (
            None
            if projection["ProjectionType"] == "ALL"
            else frozenset(projection.get("NonKeyAttributes", []))
        )
    function = template["Globals"]["Function"]
    memory_mb, architecture = int(function["MemorySize"]), function.get("Architectures", ["x86_64"])[0]

    print(f"# Requests and cost per task, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"table indexes: {', '.join(indexes)}; Lambda memory {memory_mb} MB, {architecture} (template.yaml Globals)"
    )
    print(f"source tree: {source_tree()}")
    if args.json:
        print(json.dumps(by_payload(args.burst, args.result_bytes, indexes, memory_mb, architecture)))
        return
    runs = [
        scenario("alone", 1, args.result_bytes, indexes, args.payload_bytes),
        scenario("burst", args.burst, args.result_bytes, indexes, args.payload_bytes),
    ]
    for run in runs:
        request_table(run)
        purposes(run)
    alone = runs[0]
    ours = [r for r in alone.meter.requests if r.actor == "taskgate" and r.step in STEPS]
    falling = [r for r in ours if amortised(r.step, r.what)]
    total = len(ours)
    verdict = (
        "met"
        if total <= TARGET_REQUESTS
        else f"MISSED, by {total - TARGET_REQUESTS} ({total / TARGET_REQUESTS - 1:.0%})"
    )
    print(
        f"\ntarget, at most {TARGET_REQUESTS} DynamoDB + SQS requests per task (our code): {verdict};"
        f" alone {total}, of which {len(falling)} amortise under load (fleet and setting reads, rate-limit blocks, drain hint and drain);"
        f" burst of {runs[1].tasks}: {per_task(runs[1], [r for r in runs[1].meter.requests if r.actor == 'taskgate' and r.step in STEPS]):g}"
    )
    cost_table(runs, memory_mb, architecture)
    setup = [r for r in alone.meter.requests if r.step == "setup" and r.actor == "taskgate"]
    print(f"\nnot per task (setup: registering a server and its first health check): {len(setup)} requests")
    for step, times in alone.timings.items():
        if step in STEPS:
            print(
                f"  handler time under moto, {step}: {', '.join(f'{t:.0f}' for t in times)} ms (moto, not AWS)"
            )


if __name__ == "__main__":
    main()

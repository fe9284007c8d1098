"""`taskgate dev --aws`: the AWS code path on one machine, with DynamoDB and SQS emulated by
moto in this process.

The HTTP routes run on `core.aws.context.build_context()` (DynamoDB, SQS, polling waits), as the HTTP
Lambdas do; the dispatcher Lambda is fed SQS events the way an event source mapping feeds it,
and the sweeper Lambda gets a schedule event every sweep interval (2 s). The endpoints call
the blocking store and SQS code from the event loop, as they do inside a Lambda; one request
at a time is what moto allows anyway (see `moto_env.one_request_at_a_time`).

A development command: boto3, moto and PyYAML (the dev extra) are imported only here, when it
runs. Everything lives in memory and is gone when the process exits.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tools import moto_env
from tools.moto_env import LambdaContext

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef, MessageTypeDef

log = logging.getLogger("taskgate.dev")

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
TABLE_NAME = "taskgate-dev"
QUEUE_NAME = "taskgate-dev-tasks"
PAYLOAD_BUCKET = "taskgate-dev-payloads"
# Short, so a batch item failure is seen again within seconds (the template's 360 s is six
# times the dispatcher's timeout). A batch slower than this is delivered again while it runs;
# dispatch ignores the duplicate, as it must for SQS's at-least-once delivery.
VISIBILITY_TIMEOUT_S = 5
BATCH_SIZE = 10
CONTAINERS = 8  # concurrent dispatcher invocations
STREAM_WINDOW_S = 0.5  # the stream mapping's batching window (the template's is 5 s)
STREAM_BATCH = 100
POLL_S = 0.1  # how often an idle poller looks again for delayed and re-visible messages
Handler = Callable[[dict[str, Any], Any], Any]
# One at a time: boto3's default session is not safe to make clients from in several threads.
_cold_starts = threading.Lock()


# -- moto --------------------------------------------------------------------------------------


# -- resources from template.yaml ----------------------------------------------------------------


def create_queues(client: SQSClient, template: dict[str, Any]) -> tuple[str, str]:
    """The dispatch queue and its dead-letter queue; returns the queue's URL and ARN."""
    redrive = template["Resources"]["TaskQueue"]["Properties"]["RedrivePolicy"]
    dlq_url = client.create_queue(QueueName=f"{QUEUE_NAME}-dlq")["QueueUrl"]
    policy = {
        "deadLetterTargetArn": _queue_arn(client, dlq_url),
        "maxReceiveCount": redrive["maxReceiveCount"],
    }
    url = client.create_queue(
        QueueName=QUEUE_NAME,
        Attributes={"VisibilityTimeout": str(VISIBILITY_TIMEOUT_S), "RedrivePolicy": json.dumps(policy)},
    )["QueueUrl"]
    return url, _queue_arn(client, url)


def _queue_arn(client: SQSClient, url: str) -> str:
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return attributes["QueueArn"]


# -- Lambda ------------------------------------------------------------------------------------


def dispatcher_container() -> Handler:
    """A warm dispatcher: a fresh copy of its module, with its Context built."""
    module = _container("handlers.dispatcher")
    module.context()
    handler: Handler = module.handler
    return handler


def _container(module_name: str) -> ModuleType:
    """A fresh copy of a Lambda module: its own globals, as in its own container. The
    dispatcher's module-level BatchProcessor holds one batch at a time, so concurrent
    invocations each need their own."""
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.loader is not None, module_name
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class EventSourceMapping:
    """What Lambda's SQS event source mapping does for the dispatcher: receive batches of up to
    ten, invoke the function with each (up to CONTAINERS at once), delete the messages it did
    not report in `batchItemFailures`, and none if the invocation failed. What is not deleted
    is received again after the visibility timeout, and after maxReceiveCount goes to the DLQ.

    SQS long polling would hold moto's one-request lock for the whole wait, so it polls
    without waiting and sleeps between polls, woken at once by any SendMessage."""

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        queue_arn: str,
        sent: threading.Event,
        cold_start: Callable[[], Handler],
    ) -> None:
        """`cold_start` makes a container and returns its handler; each worker makes one."""
        self.cold_start = cold_start
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.sent = sent
        self.free = threading.Semaphore(CONTAINERS)
        self.local = threading.local()

    def run(self, stop: threading.Event) -> None:
        with ThreadPoolExecutor(CONTAINERS, thread_name_prefix="dispatcher") as invocations:
            while not stop.is_set():
                self.free.acquire()  # a container is idle
                messages = [] if stop.is_set() else self._receive()
                if messages:
                    invocations.submit(self._invoke, messages)
                else:
                    self.free.release()
                    self.sent.wait(POLL_S)

    def _receive(self) -> list[MessageTypeDef]:
        self.sent.clear()  # before receiving: a send from here on wakes the next wait
        try:
            reply = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=BATCH_SIZE,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
            )
        except Exception:
            log.exception("receiving from the dispatch queue failed")
            time.sleep(1)
            return []
        return reply.get("Messages", [])

    def _invoke(self, messages: list[MessageTypeDef]) -> None:
        try:
            event = {"Records": [self._record(message) for message in messages]}
            response = self._handler()(event, LambdaContext("taskgate-dev-dispatcher"))
            failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        except Exception:
            # The invocation failed: every message in the batch is received again.
            log.exception("dispatcher invocation failed; %d message(s) will return", len(messages))
        else:
            done = [m for m in messages if m["MessageId"] not in failed]
            if done:
                self._delete(done)
        finally:
            self.free.release()

    def _handler(self) -> Handler:
        handler: Handler | None = getattr(self.local, "handler", None)
        if handler is None:
            with _cold_starts:
                handler = self.local.handler = self.cold_start()
        return handler

    def _record(self, message: MessageTypeDef) -> dict[str, Any]:
        """A message as the Lambda event carries it (see events/sqs-dispatch.json)."""
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {},  # core.aws.sqs sends none
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": REGION,
        }

    def _delete(self, messages: list[MessageTypeDef]) -> None:
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        try:
            reply = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception:
            log.exception("deleting %d handled message(s) failed; they will return", len(entries))
            return
        for failure in reply.get("Failed", []):
            # A batch slower than the visibility timeout: the message was received again.
            log.info("could not delete a handled message: %s", failure.get("Message"))


def schedule(sweep: Handler, interval_s: float, stop: threading.Event) -> None:
    """The EventBridge rule: a schedule event every `interval_s` (one sweep at a time)."""
    while not stop.wait(interval_s):
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": ACCOUNT,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/taskgate-dev-sweeper"],
            "detail": {},
        }
        try:
            sweep(event, LambdaContext("taskgate-dev-sweeper"))
        except Exception:
            log.exception("sweeper invocation failed")


def stream_mapping(reader: moto_env.StreamReader, function: Handler, stop: threading.Event) -> None:
    """Lambda's DynamoDB event source mapping: batches of the table's new (filtered) records
    to `function`, every STREAM_WINDOW_S; a failed batch is delivered again, as Lambda does."""
    pending: list[dict[str, Any]] = []
    while not stop.wait(STREAM_WINDOW_S):
        try:
            pending = pending or reader.read(STREAM_BATCH)
            if pending:
                function({"Records": pending}, LambdaContext("taskgate-dev-stats-stream"))
                pending = []
        except Exception:
            log.exception("stream batch failed; delivering it again")


# -- the command --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from tools import serving

    # The port first: taken, the command says so at once, before building anything.
    sock = serving.listen("taskgate dev --aws", args.host, args.port)
    if sock is None:
        return serving.EXIT_CANNOT_LISTEN
    template = moto_env.load_template()
    moto_env.use_fake_aws()
    base = f"http://{args.host}:{args.port}"
    os.environ["PUBLIC_URL"] = base
    os.environ.setdefault("JWT_SECRET", secrets.token_urlsafe(48))
    os.environ.setdefault("SWEEP_INTERVAL", "2000")
    # Webhook receivers on this machine are normal while developing; a deployed stack refuses them.
    allowed = os.environ.get("WEBHOOK_ALLOWED_NETWORKS", "")
    os.environ["WEBHOOK_ALLOWED_NETWORKS"] = f"{allowed} 127.0.0.0/8 ::1/128".strip()
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "taskgate")
    # The sweeper logs a report on every sweep; POWERTOOLS_LOG_LEVEL=INFO shows them.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

    import boto3
    from moto import mock_aws

    with moto_env.one_request_at_a_time() as sent, moto_env.faster_dynamodb(), mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        os.environ["TABLE_NAME"] = moto_env.create_table(
            boto3.client("dynamodb", region_name=REGION), TABLE_NAME, template
        )
        queue_url, queue_arn = create_queues(sqs, template)
        os.environ["QUEUE_URL"] = queue_url
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=PAYLOAD_BUCKET)
        os.environ["PAYLOAD_BUCKET"] = PAYLOAD_BUCKET

        from core.aws.context import build_context
        from handlers import stats_stream, sweeper
        from handlers._http import create_app
        from handlers.routes import ROUTES
        from tools.cli import uvicorn_logging

        ctx = build_context()
        sweeper.context()  # built here, not in the sweeper's thread (see _cold_starts)
        stats_stream.context()
        stream_arn = boto3.client("dynamodb", region_name=REGION).describe_table(TableName=TABLE_NAME)[
            "Table"
        ]["LatestStreamArn"]
        reader = moto_env.StreamReader(
            moto_env.streams_client(), stream_arn, moto_env.stream_filters(template, "StatsStreamFunction")
        )
        stop = threading.Event()
        workers = [
            threading.Thread(
                target=EventSourceMapping(sqs, queue_url, queue_arn, sent, dispatcher_container).run,
                args=(stop,),
                name="event-source-mapping",
                daemon=True,
            ),
            threading.Thread(
                target=stream_mapping,
                args=(reader, stats_stream.handler, stop),
                name="stream-mapping",
                daemon=True,
            ),
            threading.Thread(
                target=schedule,
                args=(sweeper.handler, ctx.config.sweep_interval_ms / 1000, stop),
                name="sweeper-schedule",
                daemon=True,
            ),
        ]
        for worker in workers:
            worker.start()

        def announce() -> None:
            print(f"taskgate dev --aws: {base}")
            print("  AWS code path: DynamoDB and SQS emulated by moto in-process (in memory, gone at exit)")
            print(
                f"  table {TABLE_NAME}, queue {queue_url}; dispatcher fed SQS events, sweeper schedule events,"
            )
            print("  statistics fed the table's stream")
            serving.announce_dev(ctx.jwt_secret, base, docs=False, refused_by="a deployed stack")

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        for quiet in ("httpx", "botocore", "urllib3"):
            logging.getLogger(quiet).setLevel(logging.WARNING)
        try:
            return serving.serve(
                "taskgate dev --aws",
                create_app(ROUTES, ctx),
                args.host,
                args.port,
                sock=sock,
                announce=announce,
                on_shutdown=ctx.events.close,
                log_level="info",
                log_config=uvicorn_logging(),
            )
        finally:
            # Let invocations in flight end while moto still answers their AWS calls.
            stop.set()
            for worker in workers:
                worker.join(timeout=10)
    return 0

"""Duplicates on the AWS path: SQS delivers at least once. GIVEN tasks created through the
HTTP routes (each enqueued once), WHEN every message on the queue is delivered three times,
the three copies handled at once by three dispatchers and then once more through the
dispatcher Lambda itself, THEN each task was sent to the backend once (attempt 1), ended
COMPLETED with one attempt, and the server's slots are all free."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from core.domain.models import TaskStatus
from handlers import dispatcher
from tests.support.aws import load_event
from tools.moto_env import LambdaContext

from .aws_stack import RecordingBackend, Stack, recording_backend, register, stack
from .conftest import Scale
from .proof import records

__all__ = ["recording_backend", "stack"]


def test_every_message_delivered_three_times_dispatches_once(
    stack: Stack, recording_backend: RecordingBackend, scale: Scale
) -> None:
    backend = recording_backend.backend
    register(stack, backend, max_concurrent=1000)
    owner = stack.api.user()
    body = {"type": "dup-test", "priority": 1, "payload": {}, "capabilities": []}
    task_ids = [
        stack.api.post("/api/task", json=body, token=owner).ok()["id"] for _ in range(scale.duplicate_tasks)
    ]
    messages = stack.messages()
    assert Counter(m["taskId"] for m in messages) == Counter(task_ids)

    # WHEN three dispatchers each get every message, in their own order, at once
    copies = [random.sample(messages, len(messages)) for _ in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        errors = list(pool.map(lambda copy: [stack.deliver(m) for m in copy], copies))
    assert all(error is None for batch in errors for error in batch), errors

    # ... and the dispatcher Lambda gets them all once more, in batches of ten
    event = load_event("sqs-dispatch.json")
    (template,) = event["Records"]
    dispatcher.context._context = stack.ctx  # the Lambda's cached Context, on this account
    try:
        for start in range(0, len(messages), 10):
            event["Records"] = [
                {**template, "messageId": f"m-{start + n}", "body": f'{{"taskId": "{m["taskId"]}"}}'}
                for n, m in enumerate(messages[start : start + 10])
            ]
            processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
            response = process_partial_response(
                event=event,
                record_handler=dispatcher.record_handler,
                processor=processor,
                context=LambdaContext("dispatch", timeout_s=29),
            )
            assert response["batchItemFailures"] == []
    finally:
        dispatcher.context.reset()

    # THEN each task reached the backend once, and finished with one attempt
    sent = Counter(
        (r["task"], r["attempt"]) for r in records(recording_backend.record_dir) if r["task"] in task_ids
    )
    assert sent == Counter({(task_id, 1): 1 for task_id in task_ids})
    for task_id in task_ids:
        task = stack.store.get_task(task_id)
        assert task is not None and (task.status, task.attempts) == (TaskStatus.COMPLETED, 1), task
    server = stack.store.get_server(backend.server_id)
    assert server is not None and server.active_tasks == 0

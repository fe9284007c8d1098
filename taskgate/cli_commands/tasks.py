"""`taskgate submit` and `taskgate tasks get|list|cancel|retry|webhooks|watch`."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

import msgspec

from taskgate.cli_commands.render import ProgressView, chunk_line, tasks_table, to_json, waiting_line
from taskgate.client import Client
from taskgate.errors import NotFound
from taskgate.models import QueueInfo, Task, TaskStatus
from taskgate.streaming import OutputEvent

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_ERROR = 2


def submit(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        payload = msgspec.json.decode(args.payload)
    except msgspec.DecodeError as exc:
        raise ValueError(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError("--payload must be a JSON object")
    options: dict[str, Any] = {
        "capabilities": args.capabilities or None,
        "webhook": args.webhook,
        "timeout": args.timeout,
        "idempotency_key": args.idempotency_key,
    }
    if args.sync:
        # async: false keeps its meaning on any gateway; Prefer: wait=N chooses the wait.
        task = client.create_task(
            args.type, payload, args.priority, async_=False, wait=args.max_wait, **options
        )
        print(task.id, file=out, flush=True)
        if not task.is_finished:
            print(
                f"error: task {task.id} not finished within the wait (status {task.status.value})", file=err
            )
            return EXIT_ERROR
        return finished(task, out, err)
    created = client.create_task(args.type, payload, args.priority, **options)
    print(created.id, file=out, flush=True)
    if not args.wait:
        return EXIT_OK
    return finished(follow(client, created.id, args.wait_timeout, out, err), out, err)


def follow(client: Client, task_id: str, timeout: float | None, out: TextIO, err: TextIO) -> Task:
    """Follow the task to its end: progress drawn on `err`, each output chunk printed on `out`
    as it comes. A gateway without streaming (its stream route unknown) is polled instead."""
    view = ProgressView(err)

    def print_chunk(chunk: OutputEvent) -> None:
        view.end()  # a chunk printed on a terminal starts its own line
        print(chunk_line(chunk.data), file=out, flush=True)

    try:
        try:
            return client.follow(task_id, timeout=timeout, on_progress=view, on_output=print_chunk)
        except NotFound as exc:
            if not exc.details.startswith("No route for"):
                raise
        return client.wait(task_id, timeout=timeout, on_progress=view)
    finally:
        view.end()


def finished(task: Task, out: TextIO, err: TextIO) -> int:
    """The result on `out` (exit 0), or the status and error on `err` (exit 1)."""
    if task.status is TaskStatus.COMPLETED:
        if task.result is not None:
            print(to_json(task.result), file=out)
        return EXIT_OK
    reason = (
        ""
        if task.error is None
        else f": {task.error if isinstance(task.error, str) else to_json(task.error)}"
    )
    print(f"{task.id} {task.status.value}{reason}", file=err)
    return EXIT_TASK_FAILED


def task_get(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The task as JSON on `out`, as the gateway sent it (fields this client does not model
    too); while it waits, why, as a sentence on `err` (so `out` stays JSON)."""
    body = client.get_task_json(args.task_id)
    print(to_json(body), file=out)
    queue = body.get("queue")
    if isinstance(queue, dict):
        print(waiting_line(msgspec.convert(queue, QueueInfo)), file=err)
    return EXIT_OK


def task_list(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    status = args.status.upper() if args.status else None
    if args.all:
        tasks = list(client.iter_tasks(status=status, page_size=args.limit))
        cursor = None
    else:
        page = client.list_tasks(status=status, limit=args.limit, cursor=args.cursor)
        tasks, cursor = page.tasks, page.next_cursor
    print(to_json(tasks) if args.json else tasks_table(tasks), file=out)
    if cursor is not None:
        print(f"more: --cursor {cursor}", file=err)
    return EXIT_OK


def task_cancel(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    reply = client.cancel_task(args.task_id)
    print(f"{reply.message}: {reply.task_id}", file=out)
    return EXIT_OK


def task_retry(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    reply = client.retry_task(args.task_id)
    print(f"{reply.message}: {reply.task_id}", file=out)
    return EXIT_OK


def task_webhooks(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    print(to_json(client.webhook_deliveries(args.task_id)), file=out)
    return EXIT_OK


def task_watch(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return finished(follow(client, args.task_id, args.wait_timeout, out, err), out, err)


COMMANDS = {
    "submit": submit,
    "tasks get": task_get,
    "tasks list": task_list,
    "tasks cancel": task_cancel,
    "tasks retry": task_retry,
    "tasks webhooks": task_webhooks,
    "tasks watch": task_watch,
}

"""The bodies of the client commands of `taskgate` (submit, tasks, servers); their arguments
are declared in tools/cli.py. Each calls the client and prints.

Exit codes: 0 done; 1 the task ended FAILED, TIMEOUT or CANCELLED; 2 the command failed (an
API error, the gateway unreachable, bad input, `--wait-timeout` passed); 130 interrupted
(Ctrl-C). Standard output gets what a script wants (the task id, the result, JSON, the
table); progress and errors go to standard error, so `id=$(taskgate submit ...)` keeps working
with `--wait`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

from taskgate.client import Client
from taskgate.errors import TaskgateError, WaitTimeout
from taskgate.models import QueueInfo, Server, Task, TaskStatus

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
BAR_WIDTH = 30

Command = Callable[[Client, argparse.Namespace, TextIO, TextIO], int]


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the client command `args` names; API and network errors become one line on
    standard error and exit code 2."""
    out, err = out or sys.stdout, err or sys.stderr
    command = COMMANDS[args.client_command]
    try:
        with Client(args.url, args.token) as client:
            return command(client, args, out, err)
    except (TaskgateError, WaitTimeout, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        # Ctrl-C while waiting stops the wait, not the task.
        print("interrupted", file=err)
        return EXIT_INTERRUPTED


def submit(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        payload = msgspec.json.decode(args.payload)
    except msgspec.DecodeError as exc:
        raise ValueError(f"--payload is not valid JSON: {exc}") from None
    created = client.create_task(args.type, payload, args.priority, capabilities=args.capabilities or None)
    print(created.id, file=out, flush=True)
    if not args.wait:
        return EXIT_OK
    view = ProgressView(err)
    try:
        task = client.wait(created.id, timeout=args.wait_timeout, on_progress=view)
    finally:
        view.end()
    if task.status is TaskStatus.COMPLETED:
        if task.result is not None:
            print(_json(task.result), file=out)
        return EXIT_OK
    reason = (
        "" if task.error is None else f": {task.error if isinstance(task.error, str) else _json(task.error)}"
    )
    print(f"{task.id} {task.status.value}{reason}", file=err)
    return EXIT_TASK_FAILED


def task_get(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The task as JSON on `out`; while it waits, why, as a sentence on `err` (so `out` stays JSON)."""
    task = client.get_task(args.task_id)
    print(_json(task), file=out)
    if task.queue is not None:
        print(waiting_line(task.queue), file=err)
    return EXIT_OK


def waiting_line(queue: QueueInfo) -> str:
    """`waiting (capacity_full, position 3, start expected 2026-12-04T15:30:02Z): <details>`"""
    facts = [str(queue.reason)]
    if queue.position is not None:
        facts.append(f"position {queue.position}")
    if queue.estimated_start_at is not None:
        when = datetime.fromtimestamp(queue.estimated_start_at / 1000, tz=UTC)
        facts.append(f"start expected {when.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    return f"waiting ({', '.join(facts)}): {queue.details}"


def task_cancel(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    reply = client.cancel_task(args.task_id)
    print(f"{reply.message}: {reply.task_id}", file=out)
    return EXIT_OK


def task_retry(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    reply = client.retry_task(args.task_id)
    print(f"{reply.message}: {reply.task_id}", file=out)
    return EXIT_OK


def servers_list(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    print(servers_table(client.list_servers(status=args.status, group=args.group)), file=out)
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "submit": submit,
    "tasks get": task_get,
    "tasks cancel": task_cancel,
    "tasks retry": task_retry,
    "servers list": servers_list,
}


class ProgressView:
    """Draws a task's progress on `stream`: one line redrawn in place on a terminal, a line
    per change otherwise (a log file or a pipe gets no carriage returns)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.redraw = stream.isatty()
        self.drawn = False

    def __call__(self, task: Task) -> None:
        line = progress_line(task)
        self.stream.write(f"\r{line}" if self.redraw else f"{line}\n")
        self.stream.flush()
        self.drawn = True

    def end(self) -> None:
        if self.redraw and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def progress_line(task: Task) -> str:
    """`[#########.....................]  30% PROCESSING`, the same width for every status."""
    progress = max(0, min(100, task.progress))
    filled = BAR_WIDTH * progress // 100
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return f"[{bar}] {progress:3d}% {task.status.value:<10}"


def servers_table(servers: list[Server]) -> str:
    """Aligned columns: id, name, status, health, active/max slots, capabilities."""
    header = ("ID", "NAME", "STATUS", "HEALTH", "ACTIVE/MAX", "CAPABILITIES")
    rows = [header] + [
        (
            _cell(server.id),
            _cell(server.name),
            server.status.value,
            server.health.status or "-",
            f"{server.active_tasks}/{server.max_concurrent}",
            _cell(",".join(server.capabilities)) or "-",
        )
        for server in servers
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _cell(text: str) -> str:
    # A name with a newline or a tab would break the table's lines and columns.
    return " ".join(text.split())


def _json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()

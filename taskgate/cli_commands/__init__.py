"""The bodies of the client commands of `taskgate` (submit, tasks, servers, stats); their
arguments are declared in tools/cli_client.py. Each calls the client and prints.

Exit codes: 0 done; 1 the task ended FAILED, TIMEOUT or CANCELLED; 2 the command failed (an
API error, the gateway unreachable, bad input, `--wait-timeout` passed, `--sync` not finished
within its wait); 130 interrupted (Ctrl-C). Standard output gets what a script wants (the task
id, output chunks, the result, JSON, the table); progress and errors go to standard error, so
`id=$(taskgate submit ...)` keeps working with `--wait`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

from taskgate.cli_commands import servers, tasks
from taskgate.cli_commands.render import ProgressView, progress_line, servers_table, tasks_table, waiting_line
from taskgate.client import Client
from taskgate.errors import TaskgateError, WaitTimeout

__all__ = [
    "COMMANDS",
    "ProgressView",
    "progress_line",
    "run",
    "servers_table",
    "tasks_table",
    "waiting_line",
]

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

Command = Callable[[Client, argparse.Namespace, TextIO, TextIO], int]

COMMANDS: dict[str, Command] = {**tasks.COMMANDS, **servers.COMMANDS}


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

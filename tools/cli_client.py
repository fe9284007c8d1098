"""The arguments of the client commands of `taskgate` (submit, tasks, servers, stats): calls
to a running gateway, whose bodies are in taskgate/cli_commands/."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def add_client_commands(commands: Subcommands) -> None:
    gateway = argparse.ArgumentParser(add_help=False)
    gateway.add_argument("--url", help="the gateway (default $TASKGATE_URL, else http://localhost:8787)")
    gateway.add_argument("--token", help="bearer token (default $TASKGATE_TOKEN)")
    _submit(commands, gateway)
    _tasks(commands, gateway)
    _servers(commands, gateway)
    stats = commands.add_parser(
        "stats", parents=[gateway], help="a day's task counts, the queue now, the top servers"
    )
    stats.set_defaults(client_command="stats")
    stats.add_argument("--date", help="YYYY-MM-DD, UTC (default today); with --days, the last day")
    stats.add_argument(
        "--days", type=int, metavar="N", help="the N days (1-31) ending with --date, a line each"
    )
    stats.add_argument("--server", metavar="ID", help="that server's statistics of the day instead")
    stats.add_argument("--json", action="store_true", help="print the replies as JSON")


def _submit(commands: Subcommands, gateway: argparse.ArgumentParser) -> None:
    submit = commands.add_parser("submit", parents=[gateway], help="submit a task; prints its id")
    submit.set_defaults(client_command="submit")
    submit.add_argument("--type", required=True, help="task type, e.g. video-processing")
    submit.add_argument("--payload", required=True, help="the payload, a JSON object")
    submit.add_argument("--priority", type=int, default=1, help="0-10, higher first (default 1)")
    submit.add_argument(
        "--capability",
        action="append",
        default=[],
        dest="capabilities",
        metavar="C",
        help="needed capability (repeatable)",
    )
    submit.add_argument("--webhook", metavar="URL", help="POST the finished task to this URL (signed)")
    submit.add_argument("--timeout", type=int, metavar="MS", help="the task's execution timeout, ms")
    submit.add_argument("--idempotency-key", metavar="KEY", help="sent as the Idempotency-Key header")
    how = submit.add_mutually_exclusive_group()
    how.add_argument(
        "--wait",
        action="store_true",
        help="follow it: progress on stderr, output chunks on stdout as they come; exit 1 unless COMPLETED",
    )
    how.add_argument(
        "--sync",
        action="store_true",
        help="one request that answers when the task ends (async: false); exit 2 if it has not by then",
    )
    submit.add_argument(
        "--wait-timeout", type=float, metavar="S", help="with --wait: give up after S seconds"
    )
    submit.add_argument(
        "--max-wait", type=int, metavar="S", help="with --sync: wait up to S seconds, 1-60 (Prefer: wait=S)"
    )


def _tasks(commands: Subcommands, gateway: argparse.ArgumentParser) -> None:
    tasks = commands.add_parser("tasks", help="list, read, follow, cancel or retry tasks").add_subparsers(
        dest="action", required=True
    )
    listing = tasks.add_parser("list", parents=[gateway], help="tasks newest first, as a table")
    listing.set_defaults(client_command="tasks list")
    listing.add_argument("--status", help="only tasks with this status (PENDING, PROCESSING, FAILED, ...)")
    listing.add_argument("--limit", type=int, help="tasks per page, 1-200 (default 50)")
    listing.add_argument("--cursor", help="the page after the one that printed this cursor")
    listing.add_argument("--all", action="store_true", help="every page, not just the first")
    listing.add_argument("--json", action="store_true", help="print the tasks as JSON")
    for action, help_text in (
        ("get", "print the task as JSON"),
        ("cancel", "cancel a PENDING or PROCESSING task"),
        ("retry", "queue a FAILED, TIMEOUT or CANCELLED task again"),
        ("webhooks", "print the task's webhook deliveries as JSON"),
        ("watch", "follow the task to its end, as submit --wait does"),
    ):
        command = tasks.add_parser(action, parents=[gateway], help=help_text)
        command.set_defaults(client_command=f"tasks {action}")
        command.add_argument("task_id", metavar="ID")
        if action == "watch":
            command.add_argument("--wait-timeout", type=float, metavar="S", help="give up after S seconds")


def _servers(commands: Subcommands, gateway: argparse.ArgumentParser) -> None:
    servers = commands.add_parser("servers", help="the registered servers (admin)").add_subparsers(
        dest="action", required=True
    )
    listing = servers.add_parser("list", parents=[gateway], help="print the servers as a table")
    listing.set_defaults(client_command="servers list")
    listing.add_argument("--status", help="only servers with this status (online, degraded, ...)")
    listing.add_argument("--group", help="only servers in this group")
    listing.add_argument("--json", action="store_true", help="print the servers as JSON")

    register = servers.add_parser("register", parents=[gateway], help="register a backend; prints its id")
    register.set_defaults(client_command="servers register")
    register.add_argument("name")
    register.add_argument("--predict", required=True, metavar="URL", help="its predict endpoint")
    register.add_argument("--health", required=True, metavar="URL", help="its health endpoint")
    register.add_argument("--metrics", metavar="URL", help="its metrics endpoint")
    register.add_argument("--cancel", metavar="URL", help="its cancel endpoint")
    register.add_argument("--id", help="the server id (default: the gateway chooses)")
    register.add_argument("--api-key", help="sent to it as Authorization: Bearer KEY")
    register.add_argument(
        "--max-concurrent", type=int, metavar="N", help="tasks at once, 1-1000 (default 10)"
    )
    register.add_argument("--capability", action="append", default=[], dest="capabilities", metavar="C")
    register.add_argument("--group", action="append", default=[], dest="groups", metavar="G")
    register.add_argument("--priority", type=int, help="weight 1-100 (default 1)")

    remove = servers.add_parser("remove", parents=[gateway], help="unregister a server")
    remove.set_defaults(client_command="servers remove")
    remove.add_argument("server_id", metavar="ID")

    maintenance = servers.add_parser(
        "maintenance", parents=[gateway], help="start (on) or end (off) a server's maintenance"
    )
    maintenance.set_defaults(client_command="servers maintenance")
    maintenance.add_argument("server_id", metavar="ID")
    maintenance.add_argument("state", choices=["on", "off"])
    maintenance.add_argument("--reason", help="with on: why (shown in the server list)")

    token = servers.add_parser("token", parents=[gateway], help="rotate a server's service token; prints it")
    token.set_defaults(client_command="servers token")
    token.add_argument("server_id", metavar="ID")

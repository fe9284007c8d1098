"""`taskgate servers list|register|remove|maintenance|token` and `taskgate stats` (admin calls,
except the statistics a user may read)."""

from __future__ import annotations

import argparse
import datetime
from typing import TextIO

import msgspec

from taskgate.cli_commands.render import range_text, servers_table, stats_text, to_json
from taskgate.client import Client

EXIT_OK = 0


def servers_list(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    servers = client.list_servers(status=args.status, group=args.group)
    print(to_json(servers) if args.json else servers_table(servers), file=out)
    return EXIT_OK


def servers_register(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    endpoints = {"predict": args.predict, "health": args.health}
    endpoints.update({name: url for name in ("metrics", "cancel") if (url := getattr(args, name))})
    reply = client.register_server(
        args.name,
        endpoints,
        id=args.id,
        api_key=args.api_key,
        max_concurrent=args.max_concurrent,
        capabilities=args.capabilities or None,
        groups=args.groups or None,
        priority=args.priority,
    )
    # The id is what a script wants; the token (a secret) only where a person reads it.
    print(reply.server_id, file=out)
    print(f"{reply.message}; its service token (for heartbeats): {reply.token}", file=err)
    return EXIT_OK


def servers_remove(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    reply = client.unregister_server(args.server_id)
    print(f"{reply.message}: {reply.server_id}", file=out)
    return EXIT_OK


def servers_maintenance(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.reason is not None and args.state == "off":
        raise ValueError("--reason goes with maintenance on")
    reply = client.set_maintenance(args.server_id, args.state == "on", reason=args.reason)
    print(f"{reply.message}: {reply.server_id} is {reply.status.value}", file=out)
    return EXIT_OK


def servers_token(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    reply = client.rotate_server_token(args.server_id)
    print(reply.token, file=out)
    return EXIT_OK


def stats(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    date = args.date or datetime.datetime.now(datetime.UTC).date().isoformat()
    if args.days is not None:
        # The range comes with the dashboard's one-request read (it also carries the queue).
        overview = client.overview(days=args.days, end=date, limit=1)
        if args.json:
            both = {
                "tasks": msgspec.to_builtins(overview.stats),
                "queue": msgspec.to_builtins(overview.queue),
            }
            print(to_json(both), file=out)
        else:
            print(range_text(overview.stats, overview.queue), file=out)
        return EXIT_OK
    if args.server:
        print(to_json(client.server_stats(args.server, date)), file=out)
        return EXIT_OK
    day, queue = client.task_stats(date), client.queue_stats()
    if args.json:
        both = {"tasks": msgspec.to_builtins(day), "queue": msgspec.to_builtins(queue)}
        print(to_json(both), file=out)
    else:
        print(stats_text(day, queue, date), file=out)
    return EXIT_OK


COMMANDS = {
    "servers list": servers_list,
    "servers register": servers_register,
    "servers remove": servers_remove,
    "servers maintenance": servers_maintenance,
    "servers token": servers_token,
    "stats": stats,
}

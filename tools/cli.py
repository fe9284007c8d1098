"""The `taskgate` command: serve, dev, token, webhook-secret, mock-backend, and the client
commands (submit, tasks, servers, stats: arguments in tools/cli_client.py, bodies in
taskgate/cli_commands/)."""

from __future__ import annotations

import argparse
import copy
import logging
import os
import re
import sys
from typing import Any
from urllib.parse import unquote_plus

from core.config import Config
from core.domain import auth
from core.domain.urls import LOOPBACK_NETWORKS
from tools.cli_client import add_client_commands

# 128 + SIGPIPE: what a shell reports for a command whose reader closed the pipe.
EXIT_BROKEN_PIPE = 141


def _serve(args: argparse.Namespace, *, dev: bool) -> int:
    from handlers.local.app import build_app, build_context
    from tools import serving

    overrides: dict[str, object] = {"public_url": f"http://{args.host}:{args.port}"}
    if dev:
        overrides["sweep_interval_ms"] = 2_000
        # Webhook receivers on this machine are normal while developing; `serve` refuses them.
        configured = Config.from_env().webhook_allowed_networks
        overrides["webhook_allowed_networks"] = (*configured, *LOOPBACK_NETWORKS)
    ctx = build_context(args.db, **overrides)
    app = build_app(ctx)

    def announce() -> None:
        if not dev:
            return
        base = ctx.config.public_url
        print(f"taskgate dev: {base}  (database {args.db})")
        serving.announce_dev(ctx.jwt_secret, base, docs=True, refused_by="`taskgate serve`")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from handlers.local.http_limits import BoundedHeadProtocol

    return serving.serve(
        f"taskgate {args.command}",
        app,
        args.host,
        args.port,
        announce=announce,
        on_shutdown=ctx.events.close,  # open task streams end at once
        log_level="info" if dev else "warning",
        log_config=uvicorn_logging(),
        # Heads capped (431), and at most this many connections at once (503 past it).
        http=BoundedHeadProtocol,
        limit_concurrency=args.max_concurrency,
    )


# `taskgate serve`: connections and requests in progress at once; past it uvicorn answers 503.
MAX_CONCURRENCY = 1000


class RedactTokens(logging.Filter):
    """Request lines show `/ws?token=<redacted>`: a WebSocket carries its token in the URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_tokens(a) if isinstance(a, str) else a for a in record.args)
        return True


# A query parameter: its name and value as written (percent-encoded or not).
_PARAM = re.compile(r"(^|[?&])([^=&?\s#]*)=([^&\s#]*)")


def redact_tokens(text: str) -> str:
    """Every `token` parameter's value replaced, however its name is spelled: the server
    decodes `%74oken` (or `tok%65n`) to `token` and accepts it, so the log must too."""

    def redact(match: re.Match[str]) -> str:
        if unquote_plus(match.group(2)).lower() != "token":
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}=<redacted>"

    return _PARAM.sub(redact, text)


def uvicorn_logging() -> dict[str, Any]:
    """uvicorn's logging configuration, with tokens redacted from what it logs of requests."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    for handler in config["handlers"].values():  # access lines, and uvicorn's WebSocket lines
        handler["filters"] = ["redact_tokens"]
    return config


def _token(args: argparse.Namespace) -> int:
    from handlers.local.app import secret_for

    roles = [r for value in args.role for r in value.split(",") if r]
    if auth.SERVICE in roles and not args.server_id:
        print("taskgate token: a service token needs --server-id", file=sys.stderr)
        return 2
    token_id = None
    if auth.SERVICE in roles:
        # Bound to the server's registration, as the one registration returns.
        from core.local.sqlite import SqliteStore

        store = SqliteStore(args.db)
        server = store.get_server(args.server_id)
        store.close()
        if server is None:
            print(f"taskgate token: no server {args.server_id!r} is registered in {args.db}", file=sys.stderr)
            return 2
        token_id = server.token_id or None
    try:
        token = auth.mint(
            secret_for(args.db),
            sub=args.sub,
            roles=roles,
            ttl_s=auth.parse_ttl(args.ttl),
            server_id=args.server_id,
            tid=token_id,
        )
    except ValueError as exc:
        print(f"taskgate token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _webhook_secret(args: argparse.Namespace) -> int:
    from core.domain.signing import derive_secret
    from handlers.local.app import secret_for

    print(os.environ.get("WEBHOOK_SECRET") or derive_secret(secret_for(args.db)))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="taskgate", description="A task gateway for backend inference servers."
    )
    commands = root.add_subparsers(dest="command", required=True)
    for name, db, help_text in (
        ("serve", "taskgate.db", "run every route, the dispatcher and the sweeper on SQLite"),
        ("dev", "taskgate.db", "serve with development defaults; prints an admin token"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--db", default=db, help=f"SQLite database file (default {db})")
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=8787)
        command.add_argument(
            "--max-concurrency",
            type=int,
            default=MAX_CONCURRENCY,
            help=f"connections and requests at once; past it 503 (default {MAX_CONCURRENCY})",
        )
        if name == "dev":
            command.add_argument(
                "--aws",
                action="store_true",
                help="run the AWS code path: DynamoDB and SQS emulated by moto in-process (ignores --db)",
            )
    token = commands.add_parser("token", help="mint a JWT (secret: JWT_SECRET, else the one beside --db)")
    token.add_argument("--role", action="append", default=[], help="admin, user or service (repeatable)")
    token.add_argument("--sub", required=True, help="the principal (task owner)")
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h)")
    token.add_argument("--server-id", help="for service tokens: the server it speaks for")
    token.add_argument("--db", default="taskgate.db", help="database whose secret to use")
    hook = commands.add_parser(
        "webhook-secret",
        help="print the webhook signing secret (WEBHOOK_SECRET, else derived from the JWT secret)",
    )
    hook.add_argument("--db", default="taskgate.db", help="database whose JWT secret to derive it from")
    mock = commands.add_parser("mock-backend", help="a fake inference backend, for tests and trying taskgate")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8080)
    mock.add_argument("--mode", choices=["sync", "async"], default="sync")
    mock.add_argument("--delay-ms", type=float, default=0, help="time each task takes")
    mock.add_argument("--fail-rate", type=float, default=0, help="fraction answered --fail-status")
    mock.add_argument("--busy-rate", type=float, default=0, help="fraction answered 503")
    mock.add_argument("--fail-status", type=int, default=500)
    mock.add_argument("--lose-callback-rate", type=float, default=0, help="async: never send the result")
    mock.add_argument("--progress-steps", type=int, default=1, help="async: progress callbacks per task")
    mock.add_argument("--unhealthy", action="store_true", help="answer /health with 503")
    mock.add_argument("--server-id", help="reported as model.server_id by /health")
    mock.add_argument("--api-key", help="require Authorization: Bearer KEY on /predict")
    mock.add_argument("--name", default="mock-backend")
    mock.add_argument("--seed", type=int, help="seed of the random outcomes")
    mock.add_argument("--stall-rate", type=float, default=0, help="fraction that take --stall-ms instead")
    mock.add_argument("--stall-ms", type=float, default=0, help="how long a stalled task takes")
    mock.add_argument("--record", help="append each predict call received to this file (JSON lines)")
    add_client_commands(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(parser().parse_args(argv))
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except BrokenPipeError:
        # The reader of standard output went away (`taskgate tasks get X | head -1`): stop
        # quietly, as a command killed by SIGPIPE does, and let nothing flush into the
        # closed pipe at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "client_command", None):
        from taskgate import cli_commands

        return cli_commands.run(args)
    if args.command == "mock-backend":
        from tools import mock_backend

        return mock_backend.run(args)
    if args.command == "webhook-secret":
        return _webhook_secret(args)
    if args.command == "token":
        if not args.role:
            args.role = [auth.USER]
        return _token(args)
    if args.command == "dev" and args.aws:
        from tools import aws_dev

        return aws_dev.run(args)
    return _serve(args, dev=args.command == "dev")


if __name__ == "__main__":
    sys.exit(main())

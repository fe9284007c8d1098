"""`taskgate dev --aws` for the dispatch end-to-end suite, with a side door into its table.

    python -m tests.e2e.dev_aws_gateway dev --aws --port N

runs the command exactly as `taskgate` does (`tools.cli.main` with these arguments), plus
a loopback endpoint, `POST /set-active-tasks`, that writes a server's slot count straight
into the emulated table. It takes a free port and prints `side door: <url>` first. A test needs that write to stand for a crash that
left a slot taken (tests/e2e/test_dispatch_recovery.py); on `taskgate serve` it opens the
SQLite file instead, but moto's table lives only in this process's memory.

`GET /queue-idle` says whether the dispatch queue holds no message, visible or in flight
(delayed ones aside): every message sent before was handled and deleted. A test that must
show the dispatcher did NOT do something waits for that instead of sleeping.

The write goes through `DynamoStore.set_active_tasks`, a boto3 call that moto answers under
the same one-request-at-a-time lock as every call of the gateway itself.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tools import cli

if TYPE_CHECKING:
    from core.aws.dynamodb import DynamoStore

_store: DynamoStore | None = None
_store_made = threading.Lock()


def store() -> DynamoStore:
    """The gateway's table, opened on first use: by then `dev --aws` has created it (the
    test calls once the gateway answers) and moto is intercepting every new client."""
    global _store
    with _store_made:
        if _store is None:
            import boto3

            from core.aws.dynamodb import DynamoStore

            # A session of its own: boto3's default one is not safe to make clients from in
            # several threads, and the gateway's threads use it.
            client = boto3.session.Session().client("dynamodb", region_name="us-east-1")
            _store = DynamoStore(os.environ["TABLE_NAME"], client=client)
        return _store


_sqs: Any = None


def queue_idle() -> bool:
    global _sqs
    with _store_made:
        if _sqs is None:
            import boto3

            _sqs = boto3.session.Session().client("sqs", region_name="us-east-1")
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = _sqs.get_queue_attributes(QueueUrl=os.environ["QUEUE_URL"], AttributeNames=names)["Attributes"]
    return all(int(found.get(name, "0")) == 0 for name in names)


class SideDoor(BaseHTTPRequestHandler):
    def _reply(self, body: dict[str, Any]) -> None:
        reply = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self) -> None:
        if self.path != "/queue-idle":
            self.send_error(404)
            return
        self._reply({"idle": queue_idle()})

    def do_POST(self) -> None:
        if self.path != "/set-active-tasks":
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        changed = store().set_active_tasks(
            body["serverId"], int(body["value"]), expected=int(body["expected"])
        )
        self._reply({"changed": changed})

    def log_message(self, format: str, *args: object) -> None:
        pass  # the gateway's log is for the gateway


DOOR_LINE = "side door: "


def main(argv: list[str]) -> int:
    # `kill -USR1 <pid>` writes every thread's stack to the gateway's log: where a slow
    # gateway spends its time.
    faulthandler.register(signal.SIGUSR1)
    # Port 0: the system picks one no other process holds (tests start many in parallel).
    door = ThreadingHTTPServer(("127.0.0.1", 0), SideDoor)
    print(f"{DOOR_LINE}http://127.0.0.1:{door.server_address[1]}", flush=True)
    threading.Thread(target=door.serve_forever, name="side-door", daemon=True).start()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

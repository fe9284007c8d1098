"""The local loop beside `sam local start-api`: what AWS would run between the functions.

    python -m tools.local_poller --env-vars deploy/local-env.json [--serve-api 3000]

`sam local start-api` serves the HTTP functions only: nothing feeds the dispatcher its queue or
runs the sweeper, so a created task stays PENDING. This process does, against the same emulated
resources (the endpoint, table and queue of the --env-vars file that `sam local` reads, with
`host.docker.internal` read as 127.0.0.1 since it runs on the host):

- the dispatch queue's event source mapping (tools.aws_dev.EventSourceMapping: batches of up to
  ten to the dispatcher handler, batch item failures left on the queue);
- the sweeper's schedule (every SWEEP_INTERVAL ms, 2 s by default);
- the statistics consumer on the table's stream.

Backends get callbacks at the file's PUBLIC_URL (`sam local start-api`'s address,
http://127.0.0.1:3000). Without Docker, --serve-api PORT serves the HTTP functions here too: each
request becomes the API Gateway (payload 2.0) event of the function the template routes it to.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tools import aws_dev, moto_env
from tools.moto_env import LambdaContext

log = logging.getLogger("taskgate.local")

ROOT = Path(__file__).resolve().parents[1]
SWEEP_INTERVAL_MS = 2_000


def load_env_vars(path: Path) -> dict[str, str]:
    """The `Parameters` of a `sam local --env-vars` file, as a process on the host sees them."""
    parameters: dict[str, Any] = json.loads(path.read_text())["Parameters"]
    return {
        name: str(value).replace("host.docker.internal", "127.0.0.1") for name, value in parameters.items()
    }


def template_env(template: dict[str, Any]) -> dict[str, str]:
    """The functions' shared variables (Globals) as `sam local` sets them: literal values, and
    parameters at their defaults; what needs a deployed resource is left for --env-vars."""
    defaults = {name: p.get("Default") for name, p in template.get("Parameters", {}).items()}
    found = {}
    for name, value in template["Globals"]["Function"]["Environment"]["Variables"].items():
        if isinstance(value, dict) and set(value) == {"Ref"} and defaults.get(value["Ref"]) is not None:
            value = defaults[value["Ref"]]
        if isinstance(value, str | int):
            found[name] = str(value)
    return found


# -- the HTTP functions without Docker --------------------------------------------------------


def http_routes(template: dict[str, Any]) -> list[tuple[str, re.Pattern[str], str]]:
    """(method, path pattern, handler module) for every HttpApi event of the template."""
    routes = []
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        module = properties["Handler"].rsplit(".", 1)[0]
        for event in properties.get("Events", {}).values():
            if event["Type"] == "HttpApi":
                path = event["Properties"]["Path"]
                pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")
                routes.append((event["Properties"]["Method"].upper(), pattern, module))
    return routes


def gateway_event(
    method: str, target: str, headers: dict[str, str], body: bytes, route: str
) -> dict[str, Any]:
    """What API Gateway (HTTP API, payload 2.0) sends a function for this request."""
    parts = urlsplit(target)
    request_id = uuid.uuid4().hex[:16]
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route,
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": {name.lower(): value for name, value in headers.items()},
        "requestContext": {
            "accountId": aws_dev.ACCOUNT,
            "apiId": "local",
            "domainName": headers.get("Host", "127.0.0.1"),
            "http": {"method": method, "path": parts.path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": request_id,
            "routeKey": route,
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }
    if body:
        event["body"] = body.decode("utf-8", "replace")
    return event


def serve_api(port: int, template: dict[str, Any]) -> ThreadingHTTPServer:
    import importlib

    routes = http_routes(template)
    functions: dict[str, Any] = {}
    lock = threading.Lock()  # one invocation per function at a time, as one container would

    class Gateway(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as API Gateway; every reply has a length

        def _serve(self) -> None:
            path = urlsplit(self.path).path
            for method, pattern, module_name in routes:  # noqa: B007 (used after the loop)
                found = pattern.match(path)
                if method == self.command and found:
                    break
            else:
                self._reply(404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            route = f"{method} {pattern.pattern[1:-1]}"
            route = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", route)
            event = gateway_event(self.command, self.path, dict(self.headers), body, route)
            if found.groupdict():
                event["pathParameters"] = found.groupdict()
            with lock:
                module = functions.get(module_name) or functions.setdefault(
                    module_name, importlib.import_module(module_name)
                )
                response = module.handler(event, LambdaContext(f"local-{module_name}", timeout_s=29))
            headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
            data = response.get("body") or ""
            self._reply(response["statusCode"], headers, data.encode() if isinstance(data, str) else data)

        def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.info("api: " + format, *args)

    server = ThreadingHTTPServer(("127.0.0.1", port), Gateway)
    threading.Thread(target=server.serve_forever, name="local-api", daemon=True).start()
    return server


# -- the command ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--env-vars", type=Path, default=ROOT / "deploy" / "local-env.json")
    parser.add_argument(
        "--serve-api", type=int, metavar="PORT", help="also serve the HTTP functions (no Docker)"
    )
    args = parser.parse_args(argv)
    template = moto_env.load_template()
    os.environ.update({**template_env(template), **load_env_vars(args.env_vars)})
    for name, value in {**moto_env.FAKE_AWS_ENV, "AWS_DEFAULT_REGION": aws_dev.REGION}.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("SWEEP_INTERVAL", str(SWEEP_INTERVAL_MS))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for quiet in ("botocore", "urllib3"):
        logging.getLogger(quiet).setLevel(logging.WARNING)

    import boto3

    from handlers import stats_stream, sweeper

    sqs = boto3.client("sqs")
    queue_url = os.environ["QUEUE_URL"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    stream_arn = boto3.client("dynamodb").describe_table(TableName=os.environ["TABLE_NAME"])["Table"][
        "LatestStreamArn"
    ]
    reader = moto_env.StreamReader(
        moto_env.streams_client(), stream_arn, moto_env.stream_filters(template, "StatsStreamFunction")
    )
    reader.read(1000)  # what happened before this poller started is not its to count
    stop = threading.Event()
    never_sent = threading.Event()  # SendMessage happens in other processes: poll
    workers = [
        threading.Thread(
            target=aws_dev.EventSourceMapping(
                sqs, queue_url, queue_arn, never_sent, aws_dev.dispatcher_container
            ).run,
            args=(stop,),
            name="event-source-mapping",
            daemon=True,
        ),
        threading.Thread(
            target=aws_dev.schedule,
            args=(sweeper.handler, int(os.environ["SWEEP_INTERVAL"]) / 1000, stop),
            name="sweeper-schedule",
            daemon=True,
        ),
        threading.Thread(
            target=aws_dev.stream_mapping,
            args=(reader, stats_stream.handler, stop),
            name="stream",
            daemon=True,
        ),
    ]
    for worker in workers:
        worker.start()
    api = serve_api(args.serve_api, template) if args.serve_api else None
    where = f"; API on http://127.0.0.1:{args.serve_api}" if api else ""
    print(f"local poller: queue {queue_url}, table {os.environ['TABLE_NAME']}{where}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if api is not None:
            api.shutdown()
        for worker in workers:
            worker.join(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

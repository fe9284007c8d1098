"""A webhook receiver for the e2e tests, run as its own process:

    python -m tests.e2e.webhook_receiver --port P --log requests.jsonl --statuses 500,500,200

Answers POST /hook with the given statuses in turn (the last one from then on) and appends
each request (time, headers, raw body) to the log as one JSON line, flushed at once.
GET /health answers 200 so the harness knows it is up. `start_receiver` starts one for a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.e2e import fleet, harness
from tests.support.waiting import eventually


def build(log_path: str, statuses: list[int]) -> Starlette:
    lock = threading.Lock()
    seen = 0

    async def hook(request: Request) -> PlainTextResponse:
        nonlocal seen
        body = await request.body()
        with lock:
            status = statuses[min(seen, len(statuses) - 1)]
            seen += 1
            with open(log_path, "a") as log:
                entry = {
                    "at": time.time(),
                    "headers": dict(request.headers),
                    "body": body.decode(),
                    "answered": status,
                }
                log.write(json.dumps(entry) + "\n")
        return PlainTextResponse("ok" if status < 300 else "no", status_code=status)

    async def health(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/health", health)])


@dataclass
class Receiver:
    url: str
    log: Path
    proc: subprocess.Popen[bytes]

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def wait_requests(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return eventually(
            self.requests, lambda r: len(r) >= count, timeout=timeout, what=f"{count} webhook requests"
        )


def start_receiver(tmp: Path, statuses: str = "200") -> Receiver:
    port = fleet.free_port()
    name = harness.unique("receiver")
    log, out = tmp / f"{name}.jsonl", tmp / f"{name}.out"
    args = [sys.executable, "-m", "tests.e2e.webhook_receiver", "--port", str(port), "--log", str(log)]
    proc = fleet._spawn([*args, "--statuses", statuses], out)
    base = f"http://127.0.0.1:{port}"
    fleet._wait_up([(proc, base, out)])
    return Receiver(f"{base}/hook", log, proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--statuses", default="200")
    args = parser.parse_args()
    statuses = [int(s) for s in args.statuses.split(",")]
    uvicorn.run(build(args.log, statuses), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

"""A webhook receiver for the e2e tests, run as its own process:

    python -m tests.e2e.webhook_receiver --port P --log requests.jsonl --statuses 500,500,200

Answers POST /hook with the given statuses in turn (the last one from then on) and appends
each request (time, headers, raw body) to the log as one JSON line, flushed at once.
GET /health answers 200 so the harness knows it is up.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


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

"""An instant synchronous backend for benchmarks: answers predict at once and remembers when
each task arrived (time.time_ns), so the benchmark can measure create -> predict received.

    python -m bench.instant_backend PORT
"""

from __future__ import annotations

import sys
import time

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

arrivals: dict[str, int] = {}


async def predict(request: Request) -> Response:
    body = msgspec.json.decode(await request.body())
    if "task_id" in body:  # the floor relay passes the client's body on as it is
        arrivals[body["task_id"]] = time.time_ns()
    return Response(b'{"status":"completed","result":{"ok":true}}', media_type="application/json")


async def health(request: Request) -> Response:
    return Response(b'{"status":"healthy"}', media_type="application/json")


async def times(request: Request) -> Response:
    return Response(msgspec.json.encode(arrivals), media_type="application/json")


app = Starlette(
    routes=[
        Route("/predict", predict, methods=["POST"]),
        Route("/health", health),
        Route("/_arrivals", times),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)

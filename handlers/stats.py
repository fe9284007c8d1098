"""Statistics and load-balancer routes: day reports (`?date=YYYY-MM-DD`, UTC), a server's
day, the queue now, the load distribution, the algorithm setting, and the overview (the whole
dashboard in one read)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.domain.schemas import SetAlgorithm, decode
from core.services import overview as overview_service
from core.services import stats, task_listing
from handlers._http import authenticated, caller, json_response, lambda_app, path_id, read_body


@authenticated
async def task_stats(request: Request) -> Response:
    day = request.query_params.get("date")
    return json_response(stats.task_stats(*caller(request), day))


@authenticated
async def hourly_report(request: Request) -> Response:
    day = request.query_params.get("date")
    return json_response(stats.hourly_report(*caller(request), day))


@authenticated
async def server_stats(request: Request) -> Response:
    server_id = path_id(request, "id", "server")
    day = request.query_params.get("date")
    return json_response(stats.server_stats(*caller(request), server_id, day))


@authenticated
async def queue_summary(request: Request) -> Response:
    return json_response(task_listing.queue_summary(*caller(request)))


@authenticated
async def overview(request: Request) -> Response:
    query = request.query_params
    return json_response(
        overview_service.overview(
            *caller(request),
            status=query.get("status"),
            limit=query.get("limit"),
            days=query.get("days"),
            end=query.get("end"),
        )
    )


@authenticated
async def load_balancer(request: Request) -> Response:
    return json_response(stats.load_balancer(*caller(request)))


@authenticated
async def set_algorithm(request: Request) -> Response:
    body = decode(await read_body(request), SetAlgorithm)
    chosen = stats.set_algorithm(*caller(request), body)
    return json_response({"message": "Load balancer algorithm updated", "algorithm": chosen})


routes = [
    Route("/api/stats/tasks", task_stats, methods=["GET"]),
    Route("/api/stats/hourly", hourly_report, methods=["GET"]),
    Route("/api/stats/servers/{id}", server_stats, methods=["GET"]),
    Route("/api/stats/queue", queue_summary, methods=["GET"]),
    Route("/api/overview", overview, methods=["GET"]),
    Route("/api/stats/load-balancer", load_balancer, methods=["GET"]),
    Route("/api/stats/load-balancer/algorithm", set_algorithm, methods=["POST"]),
]

app, handler = lambda_app(routes)

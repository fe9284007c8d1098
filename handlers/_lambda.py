"""What every Lambda entry point shares: Powertools structured logging, EMF metrics and, only
when it is turned on, X-Ray tracing.

Logs: one JSON object per line, with the Lambda request id (`function_request_id`), API
Gateway's request id (`correlation_id`) on HTTP functions, and `task_id` on every line written
while one task is handled: taken from the path, or from the first task the request writes
(create). core/ logs through the standard library (`core.*` loggers), and those lines go through
the same formatter, so they carry the same keys.

Metrics: core/ports/telemetry.py's table, written as embedded-metric-format log lines when the
invocation ends (CloudWatch turns them into metrics; no PutMetricData call), plus ColdStart.

Tracing: POWERTOOLS_TRACE_DISABLED=true (the template's default) leaves the X-Ray SDK
unimported, so it costs a cold start nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from core.aws import context as aws
from core.domain.models import Task, TaskStatus
from core.ports.telemetry import TaskMetrics, Telemetry
from core.services.context import Context

LambdaHandler = Callable[[dict[str, Any], Any], Any]

# The template sets POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE; these are the defaults.
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "taskgate"), name="%(name)s")
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "taskgate"))
# A GET writes no metric; Powertools would warn about it on every invocation's flush.
warnings.filterwarnings("ignore", message="No application metrics to publish")
for name in ("core", "taskgate"):
    logging.getLogger(name)  # registered now, so that the copy below finds them
copy_config_to_registered_loggers(source_logger=logger, include={"core", "taskgate"})


class MetricsTelemetry(Telemetry):
    """core's measurements as Powertools metrics. A drain settles predict calls on several
    threads, and Metrics keeps one metric set: adds go one at a time."""

    def __init__(self, sink: Metrics) -> None:
        self.sink = sink
        self._lock = threading.Lock()

    def count(self, name: str, value: int = 1) -> None:
        with self._lock:
            self.sink.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def duration(self, name: str, ms: float) -> None:
        with self._lock:
            self.sink.add_metric(name=name, unit=MetricUnit.Milliseconds, value=round(ms, 3))


telemetry = MetricsTelemetry(metrics)


def build_context() -> Context:
    """The AWS Context, measured: every task write this container makes feeds the metrics."""
    ctx = aws.build_context(telemetry)
    ctx.events.listeners.append(TaskMetrics(telemetry))
    return ctx


def _log_task_id(task: Task, previous: TaskStatus | None) -> None:
    # An HTTP request handles one task: once it has written it, every later line names it.
    logger.append_keys(task_id=task.id)


def build_http_context() -> Context:
    ctx = build_context()
    ctx.events.listeners.append(_log_task_id)
    return ctx


def _task_id_in_path(event: dict[str, Any]) -> str | None:
    route = str(event.get("routeKey", ""))
    if "/api/task/{id}" not in route:
        return None
    found = (event.get("pathParameters") or {}).get("id")
    return found if isinstance(found, str) else None


def instrumented(handler: LambdaHandler, *, http: bool = False) -> LambdaHandler:
    """`handler` with the request's log keys, its metrics flushed at the end and, if enabled,
    traced. HTTP handlers also log the task id of task routes from the start."""
    inner = handler

    def with_task_id(event: dict[str, Any], context: Any) -> Any:
        if http and (task_id := _task_id_in_path(event)):
            logger.append_keys(task_id=task_id)
        return inner(event, context)

    wrapped: LambdaHandler = logger.inject_lambda_context(
        with_task_id,
        correlation_id_path=correlation_paths.API_GATEWAY_HTTP if http else None,
        clear_state=True,
    )
    wrapped = metrics.log_metrics(wrapped, capture_cold_start_metric=True)
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() in ("0", "false"):
        from aws_lambda_powertools import Tracer

        wrapped = Tracer().capture_lambda_handler(wrapped)
    return wrapped


def http_handler(app: Any) -> LambdaHandler:
    """The Lambda handler of a Starlette app behind API Gateway (HTTP API, payload 2.0)."""
    from mangum import Mangum

    mangum = Mangum(app, lifespan="off")

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        response: dict[str, Any] = mangum(event, context)
        # One line per request (API Gateway's access log has no task id).
        logger.info(
            "request handled",
            extra={
                "route": event.get("routeKey"),
                "status": response.get("statusCode"),
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
        return response

    return instrumented(handler, http=True)

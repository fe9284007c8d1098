"""template.yaml and the code agree: every route the apps serve is an HttpApi event of the
function whose app serves it, and every function's handler imports."""

from __future__ import annotations

import importlib
from typing import Any

from starlette.routing import Route

from handlers import local
from tests.support.aws import load_template

# Served on one machine only: Prometheus scrapes a long-running process, not a Lambda.
LOCAL_ONLY = {("GET", "/metrics")}


def functions() -> dict[str, dict[str, Any]]:
    resources = load_template()["Resources"]
    return {
        name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"
    }


def http_events(properties: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for event in properties.get("Events", {}).values()
        if event["Type"] == "HttpApi"
    }


def served(routes: list[Any]) -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }


def test_every_served_route_is_an_event_of_the_function_serving_it() -> None:
    in_template: dict[tuple[str, str], str] = {}
    for name, properties in functions().items():
        for key in http_events(properties):
            assert key not in in_template, f"{key} is mapped to {in_template[key]} and {name}"
            in_template[key] = properties["Handler"]
    assert set(in_template) == served(local.ROUTES) - LOCAL_ONLY
    for key, handler in in_template.items():
        module = importlib.import_module(handler.rsplit(".", 1)[0])
        assert key in served(module.routes), f"{handler} does not serve {key}"


def test_every_handler_imports_and_is_callable() -> None:
    for name, properties in functions().items():
        module_name, attribute = properties["Handler"].rsplit(".", 1)
        handler = getattr(importlib.import_module(module_name), attribute)
        assert callable(handler), name


def test_the_dispatcher_reports_partial_batch_failures_with_a_dead_letter_queue() -> None:
    resources = load_template()["Resources"]
    dispatcher = resources["DispatcherFunction"]["Properties"]
    (event,) = dispatcher["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = resources["TaskQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * dispatcher["Timeout"]
    assert "deadLetterTargetArn" in queue["RedrivePolicy"]


def test_the_sweeper_runs_on_a_schedule() -> None:
    (event,) = functions()["SweeperFunction"]["Events"].values()
    assert event["Type"] == "Schedule"

"""template.yaml and the code agree: every route the apps serve is an HttpApi event of the
function whose app serves it, and every function's handler imports."""

from __future__ import annotations

import importlib
from typing import Any

from starlette.routing import Route

from handlers.local import app as local
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


# -- real-time updates: the WebSocket API and the notifier ----------------------------------

WEBSOCKET_ROUTES = {"$connect", "$disconnect", "subscribe", "unsubscribe", "$default"}


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    resources = load_template()["Resources"]
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def test_the_websocket_api_routes_every_message_type_to_the_websocket_function() -> None:
    resources = load_template()["Resources"]
    (api_name,) = of_type("AWS::ApiGatewayV2::Api")
    api = resources[api_name]["Properties"]
    assert (api["ProtocolType"], api["RouteSelectionExpression"]) == ("WEBSOCKET", "$request.body.type")
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"] for r in of_type("AWS::ApiGatewayV2::Route").values()
    }
    assert set(routes) == WEBSOCKET_ROUTES
    (integration_name,) = of_type("AWS::ApiGatewayV2::Integration")
    for route in routes.values():
        assert route["ApiId"] == {"Ref": api_name}
        assert route["Target"] == {"Fn::Sub": f"integrations/${{{integration_name}}}"}
    uri = resources[integration_name]["Properties"]["IntegrationUri"]["Fn::Sub"]
    assert "${WebSocketFunction.Arn}" in uri
    assert functions()["WebSocketFunction"]["Handler"] == "handlers.ws_api.handler"
    # A deployment made before a route exists would not serve it.
    (deployment,) = of_type("AWS::ApiGatewayV2::Deployment").values()
    route_names = set(of_type("AWS::ApiGatewayV2::Route"))
    assert set(deployment["DependsOn"]) == route_names
    (permission,) = of_type("AWS::Lambda::Permission").values()
    assert permission["Properties"]["FunctionName"] == {"Ref": "WebSocketFunction"}
    outputs = load_template()["Outputs"]
    assert outputs["WebSocketUrl"]["Value"]["Fn::Sub"].startswith(f"wss://${{{api_name}}}.execute-api.")


def matches(pattern: Any, event: Any) -> bool:
    """An event-filtering pattern (lists of allowed values or `{"prefix": ...}`, nested
    objects) against an event."""
    if isinstance(pattern, list):
        return any(
            isinstance(event, str) and event.startswith(allowed["prefix"])
            if isinstance(allowed, dict)
            else event == allowed
            for allowed in pattern
        )
    return isinstance(event, dict) and all(k in event and matches(v, event[k]) for k, v in pattern.items())


def test_the_notifier_reads_the_stream_and_gets_task_items_only() -> None:
    import json

    from tests.support.aws import load_event

    notifier = functions()["NotifierFunction"]
    assert notifier["Handler"] == "handlers.notifier.handler"
    (event,) = notifier["Events"].values()
    assert event["Type"] == "DynamoDB"
    properties = event["Properties"]
    assert properties["Stream"] == {"Fn::GetAtt": ["Table", "StreamArn"]}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "ParallelizationFactor" not in properties  # one reader per shard keeps a task's order
    patterns = [json.loads(f["Pattern"]) for f in properties["FilterCriteria"]["Filters"]]

    def passes(record: dict[str, Any]) -> bool:
        return any(matches(pattern, record) for pattern in patterns)

    (record,) = load_event("dynamodb-stream-task.json")["Records"]
    assert passes(record)
    chunk = {**record, "eventName": "INSERT"}
    chunk["dynamodb"] = {
        **record["dynamodb"],
        "Keys": {"PK": {"S": "TASK#t-1"}, "SK": {"S": "CHUNK#00000003"}},
    }
    assert passes(chunk)  # streamed output, posted as an `output` message
    assert not passes({**chunk, "eventName": "MODIFY"})
    for sort_key in ("OUTCOME", "CONN#abc=", "COUNTER", "SERVER#gpu-1"):
        other = {
            **record,
            "dynamodb": {**record["dynamodb"], "Keys": {"PK": {"S": "X"}, "SK": {"S": sort_key}}},
        }
        assert not passes(other), sort_key
    assert not passes({**record, "eventName": "REMOVE"})  # TTL expiry: nothing to tell
    endpoint = notifier["Environment"]["Variables"]["WEBSOCKET_ENDPOINT"]["Fn::Sub"]
    assert endpoint.startswith("https://${WebSocketApi}.execute-api.")


def test_only_the_websocket_functions_may_manage_connections_of_that_api_and_stage() -> None:
    resources = load_template()["Resources"]
    allowed = {
        name
        for name, properties in functions().items()
        if {"Ref": "WebSocketConnectionsPolicy"} in properties.get("Policies", [])
    }
    assert allowed == {"WebSocketFunction", "NotifierFunction"}
    (statement,) = resources["WebSocketConnectionsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "execute-api:ManageConnections"
    arn = statement["Resource"]["Fn::Sub"]
    assert arn.endswith(":${WebSocketApi}/${WebSocketStageName}/POST/@connections/*")
    for name, resource in resources.items():
        for policy in resource.get("Properties", {}).get("PolicyDocument", {}).get("Statement", []):
            assert policy["Resource"] != "*", name

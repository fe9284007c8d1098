"""template.yaml and the code agree: every route the apps serve is an HttpApi event of the
function whose app serves it, and every function's handler imports."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
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
    uri, names = resources[integration_name]["Properties"]["IntegrationUri"]["Fn::Sub"]
    assert uri.endswith("/functions/${LiveAlias}/invocations")
    assert names == {"LiveAlias": {"Ref": "WebSocketFunction.Alias"}}
    assert functions()["WebSocketFunction"]["Handler"] == "handlers.ws_api.handler"
    # A deployment made before a route exists would not serve it.
    (deployment,) = of_type("AWS::ApiGatewayV2::Deployment").values()
    route_names = set(of_type("AWS::ApiGatewayV2::Route"))
    assert set(deployment["DependsOn"]) == route_names
    (permission,) = of_type("AWS::Lambda::Permission").values()
    assert permission["Properties"]["FunctionName"] == {"Ref": "WebSocketFunction.Alias"}
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
    for sort_key in ("OUTCOME", "CONN#abc=", "COUNTER", "SERVER", "SEQUENCE"):
        other = {
            **record,
            "dynamodb": {**record["dynamodb"], "Keys": {"PK": {"S": "X"}, "SK": {"S": sort_key}}},
        }
        assert not passes(other), sort_key
    assert not passes({**record, "eventName": "REMOVE"})  # TTL expiry: nothing to tell
    endpoint = notifier["Environment"]["Variables"]["WEBSOCKET_ENDPOINT"]["Fn::Sub"]
    assert endpoint.startswith("https://${WebSocketApi}.execute-api.")
    # The sweeper closes connections whose token expired on the same endpoint.
    assert (
        functions()["SweeperFunction"]["Environment"]["Variables"]["WEBSOCKET_ENDPOINT"]["Fn::Sub"]
        == endpoint
    )


@pytest.mark.parametrize(
    ("policy", "method", "holders"),
    [
        ("WebSocketConnectionsPolicy", "POST", {"WebSocketFunction", "NotifierFunction"}),
        # DeleteConnection: closing a connection whose token expired (the sweeper: silent ones).
        (
            "WebSocketCloseConnectionsPolicy",
            "DELETE",
            {"WebSocketFunction", "NotifierFunction", "SweeperFunction"},
        ),
    ],
)
def test_only_the_websocket_functions_and_the_sweeper_may_manage_connections_of_that_api_and_stage(
    policy: str, method: str, holders: set[str]
) -> None:
    resources = load_template()["Resources"]
    allowed = {
        name for name, properties in functions().items() if {"Ref": policy} in properties.get("Policies", [])
    }
    assert allowed == holders
    (statement,) = resources[policy]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "execute-api:ManageConnections"
    arn = statement["Resource"]["Fn::Sub"]
    assert arn.endswith(f":${{WebSocketApi}}/${{WebSocketStageName}}/{method}/@connections/*")
    for name, resource in resources.items():
        for policy in resource.get("Properties", {}).get("PolicyDocument", {}).get("Statement", []):
            assert policy["Resource"] != "*", name


# -- production baseline: logs, limits, alarms, safe deployments, narrow permissions --------


def resources() -> dict[str, dict[str, Any]]:
    return load_template()["Resources"]


def test_every_function_logs_to_a_group_of_its_own_with_the_retention_parameter() -> None:
    all_resources = resources()
    groups = []
    for name, properties in functions().items():
        group = properties["LoggingConfig"]["LogGroup"]["Ref"]
        assert all_resources[group]["Type"] == "AWS::Logs::LogGroup", name
        assert all_resources[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        groups.append(group)
    assert len(set(groups)) == len(groups)  # no two functions share a group


def test_the_http_api_writes_json_access_logs_and_throttles_every_route() -> None:
    import json

    api = resources()["HttpApi"]["Properties"]
    access = api["AccessLogSettings"]
    group = access["DestinationArn"]["Fn::GetAtt"][0]
    assert resources()[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    fields = json.loads(access["Format"])
    assert {"requestId", "routeKey", "status", "latencyMs", "integrationError"} <= set(fields)
    assert api["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
    }
    # Task creation, the route whose requests may each hold a function for the whole wait.
    create = api["RouteSettings"]["POST /api/task"]
    assert create["ThrottlingRateLimit"] == {"Ref": "TaskCreateThrottlingRateLimit"}
    assert ("POST", "/api/task") in http_events(functions()["TasksFunction"])


def test_the_synchronous_wait_is_bounded_under_the_tasks_function_timeout() -> None:
    template = load_template()
    wait = template["Parameters"]["SyncWaitSeconds"]
    tasks = functions()["TasksFunction"]
    timeout = tasks.get("Timeout", template["Globals"]["Function"]["Timeout"])
    assert wait["MaxValue"] < timeout <= 29  # API Gateway gives up on an integration at 30 s
    assert tasks["Environment"]["Variables"]["SYNC_WAIT"] == {"Fn::Sub": "${SyncWaitSeconds}000"}


def test_backend_callbacks_have_a_function_with_reserved_concurrency_of_their_own() -> None:
    callbacks = functions()["CallbacksFunction"]
    assert http_events(callbacks) == {("PUT", "/api/task/{id}")}
    assert callbacks["Handler"] == functions()["TasksFunction"]["Handler"]
    assert callbacks["ReservedConcurrentExecutions"] == {
        "Fn::If": [
            "ReservesCallbackConcurrency",
            {"Ref": "CallbackReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }


def test_one_sweep_at_a_time_and_none_retried() -> None:
    sweeper = functions()["SweeperFunction"]
    assert sweeper["ReservedConcurrentExecutions"] == 1
    (event,) = sweeper["Events"].values()
    assert event["Properties"]["Schedule"] == "rate(1 minute)"
    assert sweeper["Timeout"] < 60  # a sweep ends before the next one is due
    assert event["Properties"]["RetryPolicy"]["MaximumRetryAttempts"] == 0
    assert sweeper["EventInvokeConfig"]["MaximumRetryAttempts"] == 0


def test_the_dispatcher_s_concurrency_is_capped_by_a_parameter() -> None:
    (event,) = functions()["DispatcherFunction"]["Events"].values()
    assert event["Properties"]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "DispatcherMaxConcurrency"}}
    assert load_template()["Parameters"]["DispatcherMaxConcurrency"]["MinValue"] == 2  # SQS's floor


def test_the_stream_consumers_send_batches_they_give_up_to_a_failure_queue() -> None:
    for name in ("StatsStreamFunction", "NotifierFunction"):
        (event,) = functions()[name]["Events"].values()
        on_failure = event["Properties"]["DestinationConfig"]["OnFailure"]
        assert on_failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["StreamFailureQueue", "Arn"]}}, (
            name
        )
    assert resources()["StreamFailureQueue"]["Type"] == "AWS::SQS::Queue"


def test_the_table_is_retained_and_protected_unless_a_test_stack_turns_it_off() -> None:
    table = resources()["Table"]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert table["Properties"]["DeletionProtectionEnabled"] == {"Ref": "TableDeletionProtection"}
    parameter = load_template()["Parameters"]["TableDeletionProtection"]
    assert parameter["Default"] == "true"
    assert set(parameter["AllowedValues"]) == {"true", "false"}


def alarm_metrics(alarm: dict[str, Any]) -> set[tuple[str, str]]:
    """(namespace, metric name) of every metric an alarm watches, metric math or not."""
    properties = alarm["Properties"]
    if "MetricName" in properties:
        return {(properties["Namespace"], properties["MetricName"])}
    return {
        (query["MetricStat"]["Metric"]["Namespace"], query["MetricStat"]["Metric"]["MetricName"])
        for query in properties["Metrics"]
        if "MetricStat" in query
    }


def test_alarms_cover_throttles_iterator_age_queue_age_table_throttling_and_duration() -> None:
    alarms = of_type("AWS::CloudWatch::Alarm")
    watched = set().union(*(alarm_metrics(alarm) for alarm in alarms.values()))
    assert {
        ("AWS/Lambda", "Throttles"),
        ("AWS/Lambda", "IteratorAge"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("AWS/DynamoDB", "ReadThrottleEvents"),
        ("AWS/DynamoDB", "WriteThrottleEvents"),
        ("AWS/Lambda", "Duration"),
    } <= watched
    for name, alarm in alarms.items():
        properties = alarm["Properties"]
        assert properties["TreatMissingData"] == "notBreaching", name
        assert properties["AlarmActions"] == {
            "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
        }, name
        metrics = properties.get("Metrics", [])
        assert len(metrics) <= 10, name  # CloudWatch's limit for a metric math alarm
        assert sum(1 for query in metrics if query.get("ReturnData")) <= 1, name


def test_every_function_s_throttles_and_duration_are_watched_except_as_documented() -> None:
    alarms = of_type("AWS::CloudWatch::Alarm")

    def watched(metric: str) -> set[str]:
        return {
            query["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
            for alarm in alarms.values()
            for query in alarm["Properties"].get("Metrics", [])
            if query.get("MetricStat", {}).get("Metric", {}).get("MetricName") == metric
        }

    # The sweeper is refused a second concurrent sweep by design: not a throttle to page on.
    assert watched("Throttles") == set(functions()) - {"SweeperFunction"}
    # Health and docs answer from one read or none, far under their timeout.
    assert watched("Duration") == set(functions()) - {"SystemFunction", "DocsFunction"}


def test_the_duration_alarm_divides_each_function_s_maximum_by_its_own_timeout() -> None:
    template = load_template()
    default = template["Globals"]["Function"]["Timeout"]
    alarm = resources()["DurationNearTimeoutAlarm"]["Properties"]
    (expression,) = [q["Expression"] for q in alarm["Metrics"] if "Expression" in q]
    for query in alarm["Metrics"]:
        if "MetricStat" not in query:
            continue
        assert query["MetricStat"]["Stat"] == "Maximum"
        function = query["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
        timeout_ms = functions()[function].get("Timeout", default) * 1000
        assert f"{query['Id']} / {timeout_ms}" in expression, function
    assert alarm["Threshold"] == 0.9


def test_every_function_is_deployed_through_a_canary_gated_on_the_alarms() -> None:
    template = load_template()
    globals_ = template["Globals"]["Function"]
    assert globals_["AutoPublishAlias"] == "live"
    preference = globals_["DeploymentPreference"]
    assert preference["Type"] == {"Ref": "DeploymentType"}
    assert template["Parameters"]["DeploymentType"]["Default"].startswith("Canary")
    gated = {alarm["Ref"] for alarm in preference["Alarms"]}
    assert gated <= set(of_type("AWS::CloudWatch::Alarm"))
    assert {
        "ApiErrorsAlarm",
        "DispatcherErrorsAlarm",
        "NotifierErrorsAlarm",
        "DurationNearTimeoutAlarm",
    } <= gated
    # The WebSocket API is wired by hand: it must call the alias too, or a canary skips it.
    uri = resources()["WebSocketIntegration"]["Properties"]["IntegrationUri"]["Fn::Sub"]
    assert uri[1] == {"LiveAlias": {"Ref": "WebSocketFunction.Alias"}}
    permission = resources()["WebSocketInvokePermission"]["Properties"]
    assert permission["FunctionName"] == {"Ref": "WebSocketFunction.Alias"}


def policy_statements(policy: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = resources()[policy]["Properties"]["PolicyDocument"]["Statement"]
    return statements


def actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_no_function_may_scan_or_manage_the_table() -> None:
    for name, properties in functions().items():
        for policy in properties.get("Policies", []):
            assert not (
                isinstance(policy, dict)
                and any(k.startswith("DynamoDB") and "Stream" not in k for k in policy)
            ), f"{name} uses a SAM DynamoDB policy template (they allow Scan)"
    for policy in (
        "TableReadPolicy",
        "TableReadWritePolicy",
        "StatsCountersPolicy",
        "WebSocketTablePolicy",
        "NotifierTablePolicy",
    ):
        for statement in policy_statements(policy):
            assert not actions(statement) & {
                "dynamodb:Scan",
                "dynamodb:DescribeTable",
                "dynamodb:DeleteTable",
            }


def test_functions_that_only_read_the_table_get_read_actions_only() -> None:
    (statement,) = policy_statements("TableReadPolicy")
    assert all(
        action.split(":")[1].startswith(("Get", "BatchGet", "Query", "ConditionCheck"))
        for action in actions(statement)
    )
    assert {"Ref": "TableReadPolicy"} in functions()["SystemFunction"]["Policies"]
    assert "Policies" not in functions()["DocsFunction"]


def leading_keys(policy: str) -> dict[frozenset[str], set[str]]:
    """Actions -> partition key patterns they are limited to, for every statement of `policy`."""
    found: dict[frozenset[str], set[str]] = {}
    for statement in policy_statements(policy):
        keys = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        found[frozenset(actions(statement))] = set(keys)
    return found


def test_the_websocket_functions_and_the_statistics_consumer_are_held_to_their_partitions() -> None:
    uses = {name: properties.get("Policies", []) for name, properties in functions().items()}
    assert {"Ref": "WebSocketTablePolicy"} in uses["WebSocketFunction"]
    assert {"Ref": "NotifierTablePolicy"} in uses["NotifierFunction"]
    assert {"Ref": "StatsCountersPolicy"} in uses["StatsStreamFunction"]
    for name in ("WebSocketFunction", "NotifierFunction", "StatsStreamFunction"):
        assert {"Ref": "TableReadWritePolicy"} not in uses[name], name

    websocket = leading_keys("WebSocketTablePolicy")
    writes_anywhere = {"dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
    for granted, keys in websocket.items():
        if granted & writes_anywhere:
            assert keys == {"CONN#*", "SUBS#*", "WSEXP#*"}
        else:  # reading a task and marking it followed
            assert keys == {"TASK#*"} and granted <= {
                "dynamodb:GetItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
            }
    for granted, keys in leading_keys("NotifierTablePolicy").items():
        if granted & {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}:
            assert keys == {"CONN#*", "SUBS#*", "WSEXP#*"}
    ((granted, keys),) = leading_keys("StatsCountersPolicy").items()
    assert keys == {"COUNTER#*", "COUNTERBATCH#*"}
    assert "dynamodb:GetItem" not in granted


def test_the_dashboard_is_told_the_websocket_api_s_url() -> None:
    docs = functions()["DocsFunction"]["Environment"]["Variables"]["WEBSOCKET_URL"]
    assert docs == load_template()["Outputs"]["WebSocketUrl"]["Value"]


def test_the_listing_indexes_project_a_task_s_summary_and_nothing_bulky() -> None:
    from core.aws.dynamodb.items import BULKY_FIELDS, SUMMARY_FIELDS

    indexes = {
        i["IndexName"]: i["Projection"] for i in resources()["Table"]["Properties"]["GlobalSecondaryIndexes"]
    }
    for name in ("ByOwner", "ByRecent"):
        assert indexes[name]["ProjectionType"] == "INCLUDE", name
        assert tuple(indexes[name]["NonKeyAttributes"]) == SUMMARY_FIELDS, name
        assert not set(indexes[name]["NonKeyAttributes"]) & BULKY_FIELDS


def test_the_scheduler_s_owner_queue_index_projects_keys_and_its_sort_key_names_the_task() -> None:
    """ByQueue is read for task ids only (the tasks come from the table, whole and current):
    keys only, and the id is the part of its sort key after the ready time."""
    from core.aws.dynamodb.items import index_attributes
    from core.domain.models import Task, TaskStatus

    (by_queue,) = [
        i for i in resources()["Table"]["Properties"]["GlobalSecondaryIndexes"] if i["IndexName"] == "ByQueue"
    ]
    assert by_queue["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert [k["AttributeName"] for k in by_queue["KeySchema"]] == ["GSI5PK", "GSI5SK"]
    task = Task(
        id="task_1",
        owner="alice",
        type="t",
        priority=5,
        payload={},
        capabilities=["gpu"],
        created_at=1,
        updated_at=1,
        queued_at=1_700_000_000_000,
        not_before=1_700_000_000_500,
    )
    fields = {name: getattr(task, name) for name in Task.__struct_fields__}
    keys = index_attributes("ByQueue", {**fields, "status": TaskStatus.PENDING})
    assert str(keys["GSI5SK"]).partition("#") == ("1700000000500", "#", task.id)


def test_large_payloads_have_a_private_bucket_that_expires_them_and_is_kept_with_the_table() -> None:
    bucket = resources()["PayloadBucket"]
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    properties = bucket["Properties"]
    assert all(properties["PublicAccessBlockConfiguration"].values())
    payloads, results = properties["LifecycleConfiguration"]["Rules"]
    assert (payloads["Status"], payloads["Prefix"]) == ("Enabled", "payloads/")
    assert payloads["ExpirationInDays"] == {"Ref": "PayloadRetentionDays"}
    # a result is written when its task finishes, when the task's own TTL clock starts
    assert (results["Status"], results["Prefix"]) == ("Enabled", "results/")
    assert results["ExpirationInDays"] == {"Ref": "TaskTtlDays"}
    parameters = load_template()["Parameters"]
    assert parameters["PayloadRetentionDays"]["Default"] > parameters["TaskTtlDays"]["Default"]
    assert load_template()["Globals"]["Function"]["Environment"]["Variables"]["PAYLOAD_BUCKET"] == {
        "Ref": "PayloadBucket"
    }
    (deny,) = resources()["PayloadBucketTlsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_only_task_creation_writes_payloads_and_every_reader_of_whole_tasks_may_read_them() -> None:
    def uses(policy: str) -> set[str]:
        return {name for name, p in functions().items() if {"Ref": policy} in p.get("Policies", [])}

    assert uses("PayloadWritePolicy") == {"TasksFunction"}
    # results: the functions that record a backend's answer (callbacks, synchronous predicts)
    assert uses("ResultWritePolicy") == {"CallbacksFunction", "DispatcherFunction"}
    readers = uses("TableReadWritePolicy") | {"WebSocketFunction", "NotifierFunction"}
    assert uses("PayloadReadPolicy") == readers
    for policy, prefix in (("PayloadWritePolicy", "payloads"), ("ResultWritePolicy", "results")):
        (statement,) = policy_statements(policy)
        assert statement["Action"] == "s3:PutObject"
        assert statement["Resource"] == {"Fn::Sub": f"${{PayloadBucket.Arn}}/{prefix}/*"}
    (statement,) = policy_statements("PayloadReadPolicy")
    assert statement["Action"] == "s3:GetObject"
    assert statement["Resource"] == [
        {"Fn::Sub": "${PayloadBucket.Arn}/payloads/*"},
        {"Fn::Sub": "${PayloadBucket.Arn}/results/*"},
    ]

"""The server routes: register, list, heartbeat, unregister, maintenance, metrics."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.ids import now_ms

from .harness import EXAMPLE_COMPLETED, EXAMPLE_HEARTBEAT, EXAMPLE_SERVER, Api, unique

REFERENCE_FIELDS = {
    "id",
    "name",
    "status",
    "registeredAt",
    "lastHeartbeat",
    "uptime",
    "timeSinceLastHeartbeat",
    "groups",
    "priority",
}
DESIGN_FIELDS = {"health", "capabilities", "maxConcurrent", "activeTasks", "endpoints", "maintenanceReason"}
ADMIN_REQUIRED = {"error": "Forbidden", "details": "Admin role required"}


# -- register --------------------------------------------------------------------------------


def test_register_the_reference_example(api: Api) -> None:
    body = api.post("/api/servers", json=EXAMPLE_SERVER, token=api.admin).ok()

    assert set(body) == {"serverId", "message", "token"}
    assert body["message"] == "Server registered successfully"
    assert isinstance(body["serverId"], str) and body["serverId"]
    assert body["serverId"] in api.servers()
    # Registered again, the same body is another server with another id.
    again = api.post("/api/servers", json=EXAMPLE_SERVER, token=api.admin).ok()
    assert again["serverId"] != body["serverId"]


def test_the_registration_token_is_that_servers_heartbeat_token(api: Api) -> None:
    mine = api.register_server()
    other = api.register_server()

    api.post(f"/api/servers/{mine['serverId']}/heartbeat", json=EXAMPLE_HEARTBEAT, token=mine["token"]).ok()
    api.post(
        f"/api/servers/{other['serverId']}/heartbeat", json=EXAMPLE_HEARTBEAT, token=mine["token"]
    ).error(403, "Forbidden")


def test_the_registration_token_may_not_act_as_admin_or_user(api: Api) -> None:
    token = api.register_server()["token"]
    api.get("/api/servers", token=token).error(403, "Forbidden")
    api.post("/api/servers", json=EXAMPLE_SERVER, token=token).error(403, "Forbidden")
    api.post("/api/task", json={"type": "x", "priority": 1, "payload": {}}, token=token).error(403)


def test_register_with_an_id_uses_it_and_a_duplicate_is_409(api: Api) -> None:
    server_id = unique("gpu-01")
    body = api.post("/api/servers", json={**EXAMPLE_SERVER, "id": server_id}, token=api.admin).ok()
    assert body["serverId"] == server_id

    renamed = {**EXAMPLE_SERVER, "id": server_id, "name": "impostor"}
    api.post("/api/servers", json=renamed, token=api.admin).error(409, mentions=server_id)

    assert api.server(server_id)["name"] == EXAMPLE_SERVER["name"]


def test_the_api_key_is_never_returned(api: Api) -> None:
    secret = unique("sk-live-secret")
    registered = api.post(
        "/api/servers", json={**EXAMPLE_SERVER, "id": unique("srv"), "apiKey": secret}, token=api.admin
    )
    server_id = registered.ok()["serverId"]
    replies = [
        registered,
        api.get("/api/servers", token=api.admin),
        api.get("/api/servers?group=production", token=api.admin),
        api.get(f"/api/servers/{server_id}/metrics", token=api.admin),
        api.post(f"/api/servers/{server_id}/heartbeat", json={}, token=api.service(server_id)),
        api.post(f"/api/servers/{server_id}/maintenance", json={"maintenance": False}, token=api.admin),
        api.delete(f"/api/servers/{server_id}", token=api.admin),
    ]
    for reply in replies:
        assert reply.status_code == 200, reply.text
        assert secret not in reply.text
        assert "apiKey" not in reply.text and "api_key" not in reply.text


def test_register_stores_what_was_sent(api: Api) -> None:
    server_id = api.register_server(
        endpoints=EXAMPLE_SERVER["endpoints"],
        maxConcurrent=4,
        capabilities=["video", "image"],
        groups=["gpu", "production"],
        priority=7,
    )["serverId"]

    server = api.server(server_id)

    assert server["name"] == EXAMPLE_SERVER["name"]
    assert server["maxConcurrent"] == 4
    assert sorted(server["capabilities"]) == ["image", "video"]
    assert sorted(server["groups"]) == ["gpu", "production"]
    assert server["priority"] == 7
    assert server["endpoints"] == EXAMPLE_SERVER["endpoints"]


def test_register_defaults(api: Api) -> None:
    backend = api.backend or "http://127.0.0.1:9"  # a healthy one where health checks run
    body = {"name": "bare", "endpoints": {"predict": f"{backend}/predict", "health": f"{backend}/health"}}
    server_id = api.post("/api/servers", json=body, token=api.admin).ok()["serverId"]

    server = api.server(server_id)

    assert (server["maxConcurrent"], server["priority"]) == (10, 1)
    assert (server["capabilities"], server["groups"]) == ([], [])
    assert server["status"] == "online"


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    copy = {**body, "endpoints": dict(body["endpoints"])}
    target = copy["endpoints"] if len(path) == 2 else copy
    del target[path[-1]]
    return copy


def _with_endpoint(name: str, url: str) -> dict[str, Any]:
    return {**EXAMPLE_SERVER, "endpoints": {**EXAMPLE_SERVER["endpoints"], name: url}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(_without(EXAMPLE_SERVER, "name"), "name", id="no-name"),
        pytest.param(_without(EXAMPLE_SERVER, "endpoints", "predict"), "predict", id="no-predict"),
        pytest.param(_without(EXAMPLE_SERVER, "endpoints", "health"), "health", id="no-health"),
        pytest.param(_without(EXAMPLE_SERVER, "endpoints"), "endpoints", id="no-endpoints"),
        pytest.param({**EXAMPLE_SERVER, "name": ""}, "name", id="empty-name"),
        pytest.param({**EXAMPLE_SERVER, "maxConcurrent": 0}, "maxConcurrent", id="max-concurrent-0"),
        pytest.param({**EXAMPLE_SERVER, "maxConcurrent": 1001}, "maxConcurrent", id="max-concurrent-1001"),
        pytest.param({**EXAMPLE_SERVER, "maxConcurrent": "10"}, "maxConcurrent", id="max-concurrent-str"),
        pytest.param({**EXAMPLE_SERVER, "priority": 0}, "priority", id="priority-0"),
        pytest.param({**EXAMPLE_SERVER, "priority": 101}, "priority", id="priority-101"),
        pytest.param({**EXAMPLE_SERVER, "groups": "production"}, "groups", id="groups-string"),
        pytest.param({**EXAMPLE_SERVER, "capabilities": [7]}, "capabilities", id="capabilities-int"),
        pytest.param({**EXAMPLE_SERVER, "id": "bad id!"}, "id", id="id-bad-chars"),
        pytest.param({**EXAMPLE_SERVER, "id": "s" * 65}, "id", id="id-65-chars"),
        pytest.param({**EXAMPLE_SERVER, "id": ""}, "id", id="id-empty"),
        pytest.param({**EXAMPLE_SERVER, "region": "eu"}, "region", id="unknown-field"),
        pytest.param(_with_endpoint("predict", "ftp://server1.example.com/predict"), "predict", id="ftp"),
        pytest.param(_with_endpoint("predict", "file:///etc/passwd"), "predict", id="file"),
        pytest.param(_with_endpoint("health", "http://u:p@server1.example.com/"), "health", id="credentials"),
        pytest.param(_with_endpoint("predict", "http://169.254.169.254/latest/"), "predict", id="imds"),
        pytest.param(_with_endpoint("predict", "http://[fd00:ec2::254]/"), "predict", id="imds-ipv6"),
        pytest.param(_with_endpoint("health", "http://2852039166/"), "health", id="imds-decimal"),
        pytest.param(
            _with_endpoint("predict", "http://169\uff0e254\uff0e169\uff0e254/"),
            "predict",
            id="imds-wide-dots",
        ),
        pytest.param(
            _with_endpoint("predict", "http://169\u3002254\u3002169\u3002254/"), "predict", id="imds-cjk-dots"
        ),
        pytest.param(_with_endpoint("metrics", "http://169.254.170.2/v2/"), "metrics", id="ecs-metadata"),
        # Spellings urllib3 reads differently from urlsplit: it would connect to 169.254.169.254.
        pytest.param(
            _with_endpoint("predict", "http://169.254.169.254\\.example.com/p"),
            "predict",
            id="imds-backslash",
        ),
        pytest.param(_with_endpoint("health", "http://169.254.169%2e254/"), "health", id="imds-pct-dot"),
        pytest.param(_with_endpoint("cancel", "http://[fe80::1%25eth0]/"), "cancel", id="zone-id"),
        pytest.param(_with_endpoint("predict", "not a url"), "predict", id="not-a-url"),
        pytest.param(
            _with_endpoint("shutdown", "https://server1.example.com/x"), "shutdown", id="unknown-ep"
        ),
    ],
)
def test_register_refuses_a_bad_field_and_names_it(api: Api, body: dict[str, Any], field: str) -> None:
    server_id = unique("refused")
    body = {**body, "id": body.get("id", server_id)}
    api.post("/api/servers", json=body, token=api.admin).error(400, "Invalid request", mentions=field)
    assert server_id not in api.servers()


@pytest.mark.parametrize(
    "bounds", [{"maxConcurrent": 1, "priority": 1}, {"maxConcurrent": 1000, "priority": 100}]
)
def test_register_accepts_the_bounds(api: Api, bounds: dict[str, int]) -> None:
    server = api.server(api.register_server(**bounds)["serverId"])
    assert (server["maxConcurrent"], server["priority"]) == (bounds["maxConcurrent"], bounds["priority"])


def test_a_user_may_not_register(api: Api) -> None:
    server_id = unique("srv")
    reply = api.post("/api/servers", json={**EXAMPLE_SERVER, "id": server_id}, token=api.user())
    reply.error(403)
    assert reply.json() == ADMIN_REQUIRED
    assert server_id not in api.servers()


# -- list ------------------------------------------------------------------------------------


def test_list_items_carry_the_reference_and_design_fields(api: Api) -> None:
    before = now_ms()
    server_id = api.register_server(groups=["production", "gpu"], priority=2)["serverId"]

    server = api.server(server_id)

    assert set(server) >= REFERENCE_FIELDS | DESIGN_FIELDS
    assert server["name"] == "gpu-server-01"
    assert server["status"] == "online"
    assert before <= server["registeredAt"] <= now_ms()
    assert 0 <= server["uptime"] <= now_ms() - server["registeredAt"] + 1000
    assert sorted(server["groups"]) == ["gpu", "production"]
    assert server["priority"] == 2
    assert server["activeTasks"] == 0
    assert server["maintenanceReason"] is None
    assert set(server["health"]) == {
        "status",
        "lastHeartbeat",
        "lastCheckAt",
        "consecutiveFailures",
        "ejectedUntil",
    }
    assert server["health"]["ejectedUntil"] is None  # outlier detection has not ejected it
    assert server["health"]["consecutiveFailures"] == 0
    assert server["lastHeartbeat"] is None
    # Never null (existing clients read a number): since the last sign of life, at the latest
    # the registration
    assert isinstance(server["timeSinceLastHeartbeat"], int)
    assert 0 <= server["timeSinceLastHeartbeat"] <= now_ms() - server["registeredAt"] + 1000


def test_list_filters_by_status(api: Api) -> None:
    resting = api.register_server()["serverId"]
    working = api.register_server()["serverId"]
    api.post(f"/api/servers/{resting}/maintenance", json={"maintenance": True}, token=api.admin).ok()

    in_maintenance = api.servers("?status=maintenance")
    online = api.servers("?status=online")

    assert resting in in_maintenance and working not in in_maintenance
    assert working in online and resting not in online
    assert {s["status"] for s in in_maintenance.values()} == {"maintenance"}
    assert {s["status"] for s in online.values()} == {"online"}


def test_list_filters_by_group(api: Api) -> None:
    gpu = api.register_server(groups=["gpu", "production"])["serverId"]
    cpu = api.register_server(groups=["production"])["serverId"]

    found = api.servers("?group=gpu")

    assert gpu in found and cpu not in found
    assert all("gpu" in s["groups"] for s in found.values())
    both = api.servers("?group=gpu&status=online")
    assert gpu in both and cpu not in both


def test_list_refuses_an_unknown_status(api: Api) -> None:
    api.get("/api/servers?status=bogus", token=api.admin).error(400, "Invalid request", mentions="status")


def test_a_user_may_not_list_servers(api: Api) -> None:
    reply = api.get("/api/servers", token=api.user())
    reply.error(403)
    assert reply.json() == ADMIN_REQUIRED


# -- heartbeat -------------------------------------------------------------------------------


def test_a_heartbeat_with_the_reference_body(api: Api) -> None:
    server = api.register_server()
    server_id = server["serverId"]
    before = now_ms()

    beat = api.post(f"/api/servers/{server_id}/heartbeat", json=EXAMPLE_HEARTBEAT, token=server["token"]).ok()
    assert beat["message"] == "Heartbeat updated"

    listed = api.server(server_id)
    assert before <= listed["lastHeartbeat"] <= now_ms()
    assert 0 <= listed["timeSinceLastHeartbeat"] <= now_ms() - listed["lastHeartbeat"] + 1000
    assert listed["health"]["status"] == "healthy"
    assert listed["health"]["lastHeartbeat"] == listed["lastHeartbeat"]
    assert listed["health"]["consecutiveFailures"] == 0
    assert listed["status"] == "online"


@pytest.mark.parametrize("content", [b"", b"{}"], ids=["no-body", "empty-object"])
def test_a_heartbeat_body_is_optional(api: Api, content: bytes) -> None:
    server = api.register_server()
    api.post(
        f"/api/servers/{server['serverId']}/heartbeat",
        content=content,
        token=server["token"],
        headers={"Content-Type": "application/json"},
    ).ok()
    listed = api.server(server["serverId"])
    assert listed["lastHeartbeat"] is not None
    assert listed["health"]["status"] == "healthy"


def _beat(api: Api, server: dict[str, Any], status: str) -> dict[str, Any]:
    api.post(
        f"/api/servers/{server['serverId']}/heartbeat", json={"status": status}, token=server["token"]
    ).ok()
    return api.server(server["serverId"])


def test_unhealthy_heartbeats_degrade_then_take_the_server_offline_and_healthy_ones_restore_it(
    api: Api,
) -> None:
    server = api.register_server()

    seen = [_beat(api, server, "unhealthy") for _ in range(3)]

    assert [s["status"] for s in seen] == ["degraded", "degraded", "offline"]
    assert [s["health"]["consecutiveFailures"] for s in seen] == [1, 2, 3]
    assert seen[-1]["health"]["status"] == "unhealthy"

    recovering = [_beat(api, server, "healthy") for _ in range(2)]

    assert [s["status"] for s in recovering] == ["offline", "online"]
    assert recovering[-1]["health"] == {
        **recovering[-1]["health"],
        "status": "healthy",
        "consecutiveFailures": 0,
    }


def test_one_healthy_heartbeat_between_failures_resets_the_count(api: Api) -> None:
    server = api.register_server()
    statuses = [_beat(api, server, s)["status"] for s in ("unhealthy", "unhealthy", "healthy", "unhealthy")]
    assert statuses == ["degraded", "degraded", "degraded", "degraded"]
    assert api.server(server["serverId"])["health"]["consecutiveFailures"] == 1


def test_a_server_going_offline_gives_back_its_tasks(api: Api) -> None:
    server = api.register_server()
    server_id = server["serverId"]
    owner = api.user()
    task_id = api.create_task(owner)
    api.start_processing(task_id, server_id)

    for _ in range(3):
        _beat(api, server, "unhealthy")

    task = api.get(f"/api/task/{task_id}", token=owner).ok()
    assert (task["status"], task["serverId"]) == ("PENDING", None)
    assert api.server(server_id)["activeTasks"] == 0


def test_another_servers_token_may_not_heartbeat(api: Api) -> None:
    target = api.register_server()["serverId"]
    intruder = api.register_server()

    api.post(f"/api/servers/{target}/heartbeat", json={"status": "unhealthy"}, token=intruder["token"]).error(
        403, "Forbidden"
    )

    assert api.server(target)["status"] == "online"
    assert api.server(target)["lastHeartbeat"] is None


def test_a_task_callback_token_may_not_heartbeat(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    token = api.callback(server_id, task_id, attempt=1)
    api.post(f"/api/servers/{server_id}/heartbeat", json={}, token=token).error(403, "Forbidden")


def test_a_user_may_not_heartbeat(api: Api) -> None:
    server_id = api.register_server()["serverId"]
    api.post(f"/api/servers/{server_id}/heartbeat", json={}, token=api.user()).error(403, "Forbidden")
    assert api.server(server_id)["lastHeartbeat"] is None


def test_an_admin_may_heartbeat_for_a_server(api: Api) -> None:
    server_id = api.register_server()["serverId"]
    api.post(f"/api/servers/{server_id}/heartbeat", json=EXAMPLE_HEARTBEAT, token=api.admin).ok()
    assert api.server(server_id)["lastHeartbeat"] is not None


def test_a_heartbeat_for_an_unknown_server_is_404(api: Api) -> None:
    missing = unique("ghost")
    api.post(f"/api/servers/{missing}/heartbeat", json={}, token=api.admin).error(
        404, "Not found", mentions=missing
    )
    # A service token for no registration is no longer a token at all.
    api.post(f"/api/servers/{missing}/heartbeat", json={}, token=api.service(missing)).error(
        401, mentions="revoked"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"status": "fine"}, "status", id="status"),
        pytest.param({"activeTasks": -1}, "activeTasks", id="active-tasks-negative"),
        pytest.param({"activeTasks": "3"}, "activeTasks", id="active-tasks-string"),
        pytest.param({"metrics": [45, 60]}, "metrics", id="metrics-list"),
        pytest.param({"temperature": 80}, "temperature", id="unknown-field"),
    ],
)
def test_a_bad_heartbeat_is_400(api: Api, body: dict[str, Any], field: str) -> None:
    server = api.register_server()
    api.post(f"/api/servers/{server['serverId']}/heartbeat", json=body, token=server["token"]).error(
        400, "Invalid request", mentions=field
    )
    assert api.server(server["serverId"])["lastHeartbeat"] is None


# -- unregister ------------------------------------------------------------------------------


def test_unregister(api: Api) -> None:
    server_id = api.register_server()["serverId"]

    body = api.delete(f"/api/servers/{server_id}", token=api.admin).ok()

    assert body == {"message": "Server unregistered", "serverId": server_id}
    assert server_id not in api.servers()
    api.delete(f"/api/servers/{server_id}", token=api.admin).error(404, "Not found", mentions=server_id)
    api.get(f"/api/servers/{server_id}/metrics", token=api.admin).error(404, "Not found")
    api.post(f"/api/servers/{server_id}/maintenance", json={"maintenance": True}, token=api.admin).error(404)


def test_unregister_gives_back_the_servers_processing_tasks(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()

    api.delete(f"/api/servers/{server_id}", token=api.admin).ok()

    task = api.get(f"/api/task/{task_id}", token=owner).ok()
    assert task["status"] == "PENDING"
    assert task["serverId"] is None
    assert task["attempts"] == 1


def test_an_unregistered_id_can_be_registered_again(api: Api) -> None:
    server_id = api.register_server()["serverId"]
    api.delete(f"/api/servers/{server_id}", token=api.admin).ok()
    api.post("/api/servers", json={**EXAMPLE_SERVER, "id": server_id}, token=api.admin).ok()
    assert api.server(server_id)["activeTasks"] == 0


# -- service tokens end with their registration (security review, finding 4) -----------------


def _server_token_works(api: Api, server_id: str, token: str, task_id: str) -> bool:
    beat = api.post(f"/api/servers/{server_id}/heartbeat", json=EXAMPLE_HEARTBEAT, token=token)
    read = api.get(f"/api/task/{task_id}", token=token)
    progress = api.put(f"/api/task/{task_id}", json={"status": "PROCESSING", "progress": 5}, token=token)
    codes = {beat.status_code, read.status_code, progress.status_code}
    assert codes in ({200}, {401}), (beat.text, read.text, progress.text)
    if codes == {401}:
        assert "revoked" in beat.json()["details"]
    return codes == {200}


def test_a_rotation_ends_the_old_service_token_at_once(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    first = api.service(server_id)
    assert _server_token_works(api, server_id, first, task_id)

    rotated = api.post(f"/api/servers/{server_id}/token", token=api.admin).ok()

    assert set(rotated) == {"serverId", "message", "token"} and rotated["serverId"] == server_id
    assert not _server_token_works(api, server_id, first, task_id)
    assert _server_token_works(api, server_id, rotated["token"], task_id)
    # The heartbeat the old token tried wrote nothing.
    assert api.store.get_server(server_id).last_heartbeat is not None  # type: ignore[union-attr]


def test_deletion_and_re_registration_end_the_old_service_token(api: Api) -> None:
    # GIVEN a server's token, then the server deleted and registered again under its id
    task_id, server_id, _ = api.processing_task()
    old = api.service(server_id)
    api.delete(f"/api/servers/{server_id}", token=api.admin).ok()
    api.post(f"/api/servers/{server_id}/heartbeat", json=EXAMPLE_HEARTBEAT, token=old).error(
        401, mentions="revoked"
    )
    # (at the healthy backend, its first check landed: a failed check would take it offline)
    again = api.register_server(id=server_id)
    api.start_processing(task_id, server_id)

    # THEN the old token heartbeats, reads and reports nothing on the new registration
    assert not _server_token_works(api, server_id, old, task_id)
    after = api.store.get_server(server_id)
    assert after is not None and after.last_heartbeat is None and after.reported == {}
    assert api.store.get_task(task_id).progress == 0  # type: ignore[union-attr]
    assert _server_token_works(api, server_id, again["token"], task_id)


def test_rotation_is_admin_only_and_404_for_an_unknown_server(api: Api) -> None:
    server = api.register_server()
    for token in (api.user(), server["token"]):
        api.post(f"/api/servers/{server['serverId']}/token", token=token).error(403, "Forbidden")
    api.post("/api/servers/srv-nope/token", token=api.admin).error(404, "Not found", mentions="srv-nope")
    # The refused rotations changed nothing: the registration's token still works.
    api.post(
        f"/api/servers/{server['serverId']}/heartbeat", json=EXAMPLE_HEARTBEAT, token=server["token"]
    ).ok()


def test_a_user_may_not_unregister(api: Api) -> None:
    server_id = api.register_server()["serverId"]
    reply = api.delete(f"/api/servers/{server_id}", token=api.user())
    reply.error(403)
    assert reply.json() == ADMIN_REQUIRED
    api.delete(f"/api/servers/{server_id}", token=api.service(server_id)).error(403, "Forbidden")
    assert server_id in api.servers()


def test_a_malformed_server_id_is_400(api: Api) -> None:
    api.delete("/api/servers/bad!id", token=api.admin).error(400, "Invalid request")
    api.get(f"/api/servers/{'s' * 129}/metrics", token=api.admin).error(400, "Invalid request")


# -- maintenance -----------------------------------------------------------------------------


def test_maintenance_on_and_off(api: Api) -> None:
    server_id = api.register_server()["serverId"]

    api.post(
        f"/api/servers/{server_id}/maintenance",
        json={"maintenance": True, "reason": "Scheduled maintenance"},
        token=api.admin,
    ).ok()

    server = api.server(server_id)
    assert (server["status"], server["maintenanceReason"]) == ("maintenance", "Scheduled maintenance")

    api.post(f"/api/servers/{server_id}/maintenance", json={"maintenance": False}, token=api.admin).ok()

    server = api.server(server_id)
    assert (server["status"], server["maintenanceReason"]) == ("online", None)


def test_heartbeats_do_not_end_maintenance(api: Api) -> None:
    server = api.register_server()
    server_id = server["serverId"]
    api.post(f"/api/servers/{server_id}/maintenance", json={"maintenance": True}, token=api.admin).ok()

    assert [_beat(api, server, "healthy")["status"] for _ in range(3)] == ["maintenance"] * 3


def test_leaving_maintenance_returns_to_what_health_says(api: Api) -> None:
    server = api.register_server()
    server_id = server["serverId"]
    _beat(api, server, "unhealthy")
    api.post(f"/api/servers/{server_id}/maintenance", json={"maintenance": True}, token=api.admin).ok()
    api.post(f"/api/servers/{server_id}/maintenance", json={"maintenance": False}, token=api.admin).ok()
    assert api.server(server_id)["status"] == "degraded"


def test_maintenance_keeps_tasks_in_flight(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()

    api.post(f"/api/servers/{server_id}/maintenance", json={"maintenance": True}, token=api.admin).ok()

    assert api.task(task_id)["status"] == "PROCESSING"
    api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=api.service(server_id)).ok()
    assert api.server(server_id)["activeTasks"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"reason": "Scheduled maintenance"}, "maintenance", id="missing"),
        pytest.param({"maintenance": "yes"}, "maintenance", id="string"),
        pytest.param({"maintenance": 1}, "maintenance", id="int"),
        pytest.param({"maintenance": True, "reason": 5}, "reason", id="reason-int"),
        pytest.param({"maintenance": True, "until": 5}, "until", id="unknown-field"),
    ],
)
def test_a_bad_maintenance_body_is_400(api: Api, body: dict[str, Any], field: str) -> None:
    server_id = api.register_server()["serverId"]
    api.post(f"/api/servers/{server_id}/maintenance", json=body, token=api.admin).error(
        400, "Invalid request", mentions=field
    )
    assert api.server(server_id)["status"] == "online"


def test_a_user_may_not_set_maintenance(api: Api) -> None:
    server_id = api.register_server()["serverId"]
    reply = api.post(f"/api/servers/{server_id}/maintenance", json={"maintenance": True}, token=api.user())
    reply.error(403)
    assert reply.json() == ADMIN_REQUIRED
    assert api.server(server_id)["status"] == "online"


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_of_a_new_server(api: Api) -> None:
    server_id = api.register_server(maxConcurrent=4)["serverId"]

    body = api.get(f"/api/servers/{server_id}/metrics", token=api.admin).ok()

    assert body["serverId"] == server_id
    metrics = body["metrics"]
    assert {
        "uptime",
        "tasksProcessed",
        "successCount",
        "failureCount",
        "averageProcessingTime",
        "currentLoad",
    } <= set(metrics)
    assert metrics["uptime"] >= 0
    assert (metrics["tasksProcessed"], metrics["successCount"], metrics["failureCount"]) == (0, 0, 0)
    assert metrics["averageProcessingTime"] == 0
    assert metrics["currentLoad"] == 0


def test_metrics_count_completed_and_failed_tasks(api: Api) -> None:
    server_id = api.register_server(maxConcurrent=4)["serverId"]
    token = api.service(server_id)
    owner = api.user()
    good, bad, running = (api.create_task(owner) for _ in range(3))
    for task_id in (good, bad, running):
        api.start_processing(task_id, server_id)
    assert api.metrics(server_id)["metrics"]["currentLoad"] == pytest.approx(0.75)

    api.put(f"/api/task/{good}", json=EXAMPLE_COMPLETED, token=token).ok()
    api.put(f"/api/task/{bad}", json={"status": "FAILED", "error": "boom"}, token=token).ok()

    metrics = api.metrics(server_id)["metrics"]
    assert metrics["tasksProcessed"] == 2
    assert metrics["successCount"] == 1
    assert metrics["failureCount"] == 1
    assert metrics["averageProcessingTime"] >= 0
    assert metrics["currentLoad"] == pytest.approx(0.25)


def test_metrics_of_an_unknown_server_is_404(api: Api) -> None:
    missing = unique("ghost")
    api.get(f"/api/servers/{missing}/metrics", token=api.admin).error(404, "Not found", mentions=missing)


def test_a_user_may_not_read_metrics(api: Api) -> None:
    server_id = api.register_server()["serverId"]
    reply = api.get(f"/api/servers/{server_id}/metrics", token=api.user())
    reply.error(403)
    assert reply.json() == ADMIN_REQUIRED

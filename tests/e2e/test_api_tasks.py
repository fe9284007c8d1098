"""POST /api/task, GET /api/task/:id, retry and cancel."""

from __future__ import annotations

import re
from typing import Any

import pytest

from core.domain.ids import now_ms
from core.domain.models import TaskStatus

from .harness import EXAMPLE_TASK, Api

TASK_FIELDS = {
    "id",
    "type",
    "priority",
    "payload",
    "status",
    "progress",
    "serverId",
    "result",
    "error",
    "attempts",
    "createdAt",
    "updatedAt",
    "capabilities",
    "history",
}
OPTIONAL_TASK_FIELDS = {"startedAt", "completedAt", "message", "queue"}
QUEUE_REASONS = {"no_capable_server", "no_server_online", "capacity_full", "backoff", "dispatching"}


# -- create ----------------------------------------------------------------------------------


def test_create_the_reference_example_returns_a_pending_task(api: Api) -> None:
    before = now_ms()
    body = api.post("/api/task", json=EXAMPLE_TASK, token=api.user()).ok()
    after = now_ms()

    assert set(body) == {"id", "status", "createdAt", "updatedAt"}
    assert body["status"] == "PENDING"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,128}", body["id"])
    assert before <= body["createdAt"] <= after
    assert body["updatedAt"] == body["createdAt"]


def test_create_gives_every_task_its_own_id(api: Api) -> None:
    owner = api.user()
    ids = {api.create_task(owner) for _ in range(5)}
    assert len(ids) == 5


def test_create_accepts_the_sdk_example_with_only_required_fields(api: Api) -> None:
    body = {"type": "video-processing", "priority": 1, "payload": {"video_url": "https://example.com/v.mp4"}}
    task_id = api.post("/api/task", json=body, token=api.user()).ok()["id"]
    assert api.task(task_id)["status"] == "PENDING"


def test_create_accepts_every_optional_field(api: Api) -> None:
    body = {
        **EXAMPLE_TASK,
        "priority": 10,
        "timeout": 60_000,
        "webhook": "https://hooks.example.com/taskgate",
        "async": True,
    }
    task_id = api.post("/api/task", json=body, token=api.user()).ok()["id"]
    task = api.task(task_id)
    assert task["priority"] == 10
    assert task["type"] == "video-processing"


def test_an_admin_may_create_tasks(api: Api) -> None:
    api.post("/api/task", json=EXAMPLE_TASK, token=api.admin).ok()


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        pytest.param(b'{"type": "video-processing", "priority": 1,', "JSON", id="truncated"),
        pytest.param(b"{'type': 'x'}", "JSON", id="single-quotes"),
        pytest.param(b"not json at all", "JSON", id="text"),
        pytest.param(b"", (), id="empty"),
        pytest.param(b"   ", (), id="blank"),
        pytest.param(b"[]", (), id="array"),
        pytest.param(b'[{"type": "x", "priority": 1, "payload": {}}]', (), id="array-of-task"),
        pytest.param(b"null", (), id="null"),
        pytest.param(b'"a string"', (), id="string"),
    ],
)
def test_create_refuses_a_body_that_is_not_a_json_object(api: Api, content: bytes, mentions: Any) -> None:
    reply = api.post(
        "/api/task", content=content, token=api.user(), headers={"Content-Type": "application/json"}
    )
    reply.error(400, "Invalid request", mentions=mentions)


@pytest.mark.parametrize("field", ["type", "priority", "payload"])
def test_create_names_a_missing_required_field(api: Api, field: str) -> None:
    body = {k: v for k, v in EXAMPLE_TASK.items() if k != field}
    reply = api.post("/api/task", json=body, token=api.user())
    reply.error(400, "Invalid request", details=f"Missing required field: {field}")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        pytest.param({"priority": "1"}, "priority", id="priority-string"),
        pytest.param({"priority": 1.5}, "priority", id="priority-float"),
        pytest.param({"priority": True}, "priority", id="priority-bool"),
        pytest.param({"priority": None}, "priority", id="priority-null"),
        pytest.param({"priority": -1}, "priority", id="priority-negative"),
        pytest.param({"priority": 11}, "priority", id="priority-11"),
        pytest.param({"priority": 10**30}, "priority", id="priority-huge"),
        pytest.param({"payload": ["a", "b"]}, "payload", id="payload-list"),
        pytest.param({"payload": "video.mp4"}, "payload", id="payload-string"),
        pytest.param({"payload": None}, "payload", id="payload-null"),
        pytest.param({"type": 7}, "type", id="type-int"),
        pytest.param({"type": ""}, "type", id="type-empty"),
        pytest.param({"type": "Video-Processing"}, "type", id="type-uppercase"),
        pytest.param({"type": "-video"}, "type", id="type-leading-dash"),
        pytest.param({"type": "video processing"}, "type", id="type-space"),
        pytest.param({"type": "v" * 65}, "type", id="type-65-chars"),
        pytest.param({"capabilities": [1, 2]}, "capabilities", id="capabilities-ints"),
        pytest.param({"capabilities": "video"}, "capabilities", id="capabilities-string"),
        pytest.param({"async": "yes"}, "async", id="async-string"),
        pytest.param({"timeout": 0}, "timeout", id="timeout-0"),
        pytest.param({"timeout": -5}, "timeout", id="timeout-negative"),
        pytest.param({"timeout": "60s"}, "timeout", id="timeout-string"),
        pytest.param({"webhook": 42}, "webhook", id="webhook-int"),
        pytest.param({"webhook": "ftp://hooks.example.com/x"}, "webhook", id="webhook-ftp"),
        pytest.param({"webhook": "hooks.example.com/x"}, "webhook", id="webhook-no-scheme"),
        pytest.param({"webhook": "javascript:alert(1)"}, "webhook", id="webhook-javascript"),
        pytest.param({"webhook": "http://169.254.169.254/latest/meta-data/"}, "webhook", id="webhook-imds"),
        pytest.param({"webhook": "http://[fd00:ec2::254]/"}, "webhook", id="webhook-imds-ipv6"),
        pytest.param({"webhook": "http://2852039166/"}, "webhook", id="webhook-imds-decimal"),
        pytest.param({"webhook": "http://0xa9fea9fe/"}, "webhook", id="webhook-imds-hex"),
        pytest.param({"webhook": "http://[::ffff:169.254.169.254]/"}, "webhook", id="webhook-imds-v4-mapped"),
        # Full stops that URL parsers, httpx and getaddrinfo all read as "."
        pytest.param(
            {"webhook": "http://169\u3002254\u3002169\u3002254/"}, "webhook", id="webhook-imds-cjk-dots"
        ),
        pytest.param({"webhook": "http://metadata.google.internal/"}, "webhook", id="webhook-gcp-metadata"),
        pytest.param({"webhook": "http://user:pw@hooks.example.com/"}, "webhook", id="webhook-credentials"),
        # Spellings urllib3 reads differently from urlsplit (percent-decoded host, `\` as a separator).
        pytest.param(
            {"webhook": "http://169.254.169%2e254/latest/meta-data/"}, "webhook", id="webhook-pct-dot"
        ),
        pytest.param({"webhook": "http://169.254.169.254\\.example.com/"}, "webhook", id="webhook-backslash"),
        pytest.param({"webhook": "http://hooks.example.com\t/"}, "webhook", id="webhook-tab"),
        pytest.param({"webhook": "http://hooks.example.com:+80/"}, "webhook", id="webhook-signed-port"),
        # Users may not make taskgate call private networks (no WEBHOOK_ALLOWED_NETWORKS here).
        pytest.param(
            {"webhook": "http://127.0.0.1:9/internal-only/admin-action"}, "webhook", id="webhook-loopback"
        ),
        pytest.param({"webhook": "http://localhost:9/x"}, "webhook", id="webhook-localhost"),
        pytest.param({"webhook": "http://10.1.2.3/x"}, "webhook", id="webhook-private"),
        pytest.param({"webhook": "http://100.64.0.1/x"}, "webhook", id="webhook-cgnat"),
        pytest.param({"webhook": "http://224.0.0.1/x"}, "webhook", id="webhook-multicast"),
        pytest.param({"webhook": "http://0.0.0.0/x"}, "webhook", id="webhook-unspecified"),
        pytest.param({"webhook": "http://[::1]/x"}, "webhook", id="webhook-ipv6-loopback"),
        pytest.param({"webhook": "http://[fc00::1]/x"}, "webhook", id="webhook-ipv6-ula"),
        pytest.param({"webhook": "http://[64:ff9b::a00:1]/x"}, "webhook", id="webhook-nat64"),
        pytest.param({"webhook": "http://[2002:a00:1::]/x"}, "webhook", id="webhook-6to4"),
        pytest.param({"webhook": "http://[::10.0.0.1]/x"}, "webhook", id="webhook-v4-compatible"),
        pytest.param({"webhook": "http://[::ffff:127.0.0.1]/x"}, "webhook", id="webhook-v4-mapped-loopback"),
        pytest.param({"colour": "blue"}, "colour", id="unknown-field"),
        pytest.param({"Priority": 1}, "Priority", id="unknown-field-case"),
    ],
)
def test_create_refuses_a_bad_field_and_names_it(api: Api, override: dict[str, Any], field: str) -> None:
    body = {**EXAMPLE_TASK, **override}
    reply = api.post("/api/task", json=body, token=api.user())
    reply.error(400, "Invalid request", mentions=field)


def test_create_accepts_a_type_of_64_characters(api: Api) -> None:
    task_type = "a0._-" + "v" * 59
    task_id = api.create_task(api.user(), type=task_type)
    assert api.task(task_id)["type"] == task_type


@pytest.mark.parametrize("priority", [0, 10])
def test_create_accepts_the_priority_bounds(api: Api, priority: int) -> None:
    task_id = api.create_task(api.user(), priority=priority)
    assert api.task(task_id)["priority"] == priority


def test_a_refused_create_stores_nothing(api: Api) -> None:
    owner = api.user()
    api.post("/api/task", json={**EXAMPLE_TASK, "priority": 11}, token=owner).error(400)
    # The next good task is the owner's only one: nothing half-made was left behind.
    task_id = api.create_task(owner)
    assert api.get(f"/api/task/{task_id}", token=owner).ok()["status"] == "PENDING"


def _padded_task(total_bytes: int) -> bytes:
    """A valid task body of exactly `total_bytes` bytes."""
    head, tail = b'{"type": "big", "priority": 1, "payload": {"blob": "', b'"}}'
    return head + b"a" * (total_bytes - len(head) - len(tail)) + tail


def test_create_accepts_a_body_of_exactly_256_kib(api: Api) -> None:
    reply = api.post(
        "/api/task",
        content=_padded_task(256 * 1024),
        token=api.user(),
        headers={"Content-Type": "application/json"},
    )
    assert reply.ok()["status"] == "PENDING"


def test_create_refuses_a_body_over_256_kib(api: Api) -> None:
    reply = api.post(
        "/api/task",
        content=_padded_task(256 * 1024 + 1),
        token=api.user(),
        headers={"Content-Type": "application/json"},
    )
    reply.error(413)


def test_create_refuses_a_chunked_body_over_256_kib(api: Api) -> None:
    body = _padded_task(300 * 1024)

    def chunks() -> Any:
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    reply = api.post(
        "/api/task", content=chunks(), token=api.user(), headers={"Content-Type": "application/json"}
    )
    reply.error(413)


def test_a_service_token_may_not_create_tasks(api: Api) -> None:
    server_id = api.register_server()["serverId"]
    reply = api.post("/api/task", json=EXAMPLE_TASK, token=api.service(server_id))
    reply.error(403, "Forbidden")


# -- read ------------------------------------------------------------------------------------


def test_the_owner_reads_a_new_task_with_every_design_field(api: Api) -> None:
    owner = api.user()
    created = api.post("/api/task", json=EXAMPLE_TASK, token=owner).ok()

    task = api.get(f"/api/task/{created['id']}", token=owner).ok()

    assert TASK_FIELDS <= set(task) <= TASK_FIELDS | OPTIONAL_TASK_FIELDS
    # PENDING: it says why it waits (which reason depends on the servers other tests left)
    assert task["queue"]["reason"] in QUEUE_REASONS and task["queue"]["details"], task["queue"]
    assert task == {
        **{k: v for k, v in task.items() if k in OPTIONAL_TASK_FIELDS},
        "capabilities": EXAMPLE_TASK["capabilities"],
        "id": created["id"],
        "type": "video-processing",
        "priority": 1,
        "payload": EXAMPLE_TASK["payload"],
        "status": "PENDING",
        "progress": 0,
        "serverId": None,
        "result": None,
        "error": None,
        "attempts": 0,
        "createdAt": created["createdAt"],
        "updatedAt": created["updatedAt"],
        "history": [],  # not sent to a backend yet
    }


def test_a_processing_task_shows_its_server_and_start(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()

    task = api.get(f"/api/task/{task_id}", token=owner).ok()

    assert task["status"] == "PROCESSING"
    assert task["serverId"] == server_id
    assert task["attempts"] == 1
    assert task["startedAt"] >= task["createdAt"]


def test_another_user_gets_404_for_a_task_they_do_not_own(api: Api) -> None:
    task_id = api.create_task(api.user())
    reply = api.get(f"/api/task/{task_id}", token=api.user())
    reply.error(404, "Not found", details=f"Task not found: {task_id}")


def test_an_admin_reads_any_task(api: Api) -> None:
    task_id = api.create_task(api.user())
    assert api.get(f"/api/task/{task_id}", token=api.admin).ok()["id"] == task_id


def test_the_assigned_server_reads_its_task_and_no_other_server_does(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    other = api.register_server()["serverId"]

    assert api.get(f"/api/task/{task_id}", token=api.service(server_id)).ok()["id"] == task_id
    api.get(f"/api/task/{task_id}", token=api.service(other)).error(404, "Not found")


def test_the_reference_example_id_is_unknown_not_malformed(api: Api) -> None:
    reply = api.get("/api/task/task_abc123", token=api.user())
    reply.error(404, "Not found", details="Task not found: task_abc123")


@pytest.mark.parametrize(
    "task_id",
    [
        pytest.param("task_abc!", id="bang"),
        pytest.param("task.abc", id="dot"),
        pytest.param("task%20abc", id="space"),
        pytest.param("t" * 129, id="129-chars"),
    ],
)
def test_a_malformed_task_id_is_400(api: Api, task_id: str) -> None:
    api.get(f"/api/task/{task_id}", token=api.user()).error(400, "Invalid request")


def test_an_id_of_exactly_128_allowed_characters_is_404(api: Api) -> None:
    task_id = "task_" + "aZ09-_" * 20 + "abc"
    assert len(task_id) == 128
    api.get(f"/api/task/{task_id}", token=api.user()).error(
        404, "Not found", details=f"Task not found: {task_id}"
    )


def test_an_unknown_id_is_404_on_every_task_route(api: Api) -> None:
    missing = "task_" + "0" * 20
    api.put(f"/api/task/{missing}", json={"progress": 1}, token=api.admin).error(404, "Not found")
    api.post(f"/api/task/{missing}/retry", token=api.user()).error(404, "Not found")
    api.post(f"/api/task/{missing}/cancel", token=api.user()).error(404, "Not found")


# -- retry -----------------------------------------------------------------------------------


def _failed_task(api: Api) -> tuple[str, str]:
    task_id, server_id, owner = api.processing_task()
    api.put(
        f"/api/task/{task_id}", json={"status": "FAILED", "error": "CUDA OOM"}, token=api.service(server_id)
    ).ok()
    return task_id, owner


def _assert_requeued(api: Api, task_id: str, owner: str, attempts: int) -> None:
    task = api.get(f"/api/task/{task_id}", token=owner).ok()
    assert task["status"] == "PENDING"
    assert task["attempts"] == attempts
    assert task["serverId"] is None
    assert task["result"] is None
    assert task["error"] is None
    assert task["progress"] == 0


def test_retry_a_failed_task(api: Api) -> None:
    task_id, owner = _failed_task(api)

    body = api.post(f"/api/task/{task_id}/retry", token=owner).ok()

    assert body == {"message": "Task queued for retry", "taskId": task_id}
    _assert_requeued(api, task_id, owner, attempts=1)


def test_retry_a_timed_out_task(api: Api) -> None:
    task_id, _, owner = api.processing_task()
    api.end_attempt(task_id, TaskStatus.TIMEOUT)
    assert api.task(task_id)["status"] == "TIMEOUT"

    body = api.post(f"/api/task/{task_id}/retry", token=owner).ok()

    assert body == {"message": "Task queued for retry", "taskId": task_id}
    _assert_requeued(api, task_id, owner, attempts=1)


def test_retry_a_cancelled_task(api: Api) -> None:
    owner = api.user()
    task_id = api.create_task(owner)
    api.post(f"/api/task/{task_id}/cancel", token=owner).ok()

    body = api.post(f"/api/task/{task_id}/retry", token=owner).ok()

    assert body == {"message": "Task queued for retry", "taskId": task_id}
    _assert_requeued(api, task_id, owner, attempts=0)


def test_a_retried_task_can_be_failed_and_retried_again(api: Api) -> None:
    task_id, owner = _failed_task(api)
    api.post(f"/api/task/{task_id}/retry", token=owner).ok()
    server_id = api.register_server()["serverId"]
    api.start_processing(task_id, server_id)
    api.put(f"/api/task/{task_id}", json={"status": "FAILED"}, token=api.service(server_id)).ok()

    api.post(f"/api/task/{task_id}/retry", token=owner).ok()

    _assert_requeued(api, task_id, owner, attempts=2)


def test_retry_a_pending_task_is_409(api: Api) -> None:
    owner = api.user()
    task_id = api.create_task(owner)
    api.post(f"/api/task/{task_id}/retry", token=owner).error(409, mentions="PENDING")
    assert api.task(task_id)["status"] == "PENDING"


def test_retry_a_processing_task_is_409(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()
    api.post(f"/api/task/{task_id}/retry", token=owner).error(409, mentions="PROCESSING")
    task = api.task(task_id)
    assert (task["status"], task["serverId"]) == ("PROCESSING", server_id)


def test_retry_a_completed_task_is_409_and_keeps_the_result(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()
    api.put(
        f"/api/task/{task_id}",
        json={"status": "COMPLETED", "result": {"ok": 1}},
        token=api.service(server_id),
    ).ok()

    api.post(f"/api/task/{task_id}/retry", token=owner).error(409, mentions="COMPLETED")

    task = api.task(task_id)
    assert (task["status"], task["result"]) == ("COMPLETED", {"ok": 1})


def test_retry_another_users_task_is_404(api: Api) -> None:
    task_id, _ = _failed_task(api)
    api.post(f"/api/task/{task_id}/retry", token=api.user()).error(
        404, "Not found", details=f"Task not found: {task_id}"
    )
    assert api.task(task_id)["status"] == "FAILED"


def test_an_admin_may_retry_any_task(api: Api) -> None:
    task_id, owner = _failed_task(api)
    api.post(f"/api/task/{task_id}/retry", token=api.admin).ok()
    _assert_requeued(api, task_id, owner, attempts=1)


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_a_pending_task(api: Api) -> None:
    owner = api.user()
    task_id = api.create_task(owner)

    body = api.post(f"/api/task/{task_id}/cancel", token=owner).ok()

    assert body == {"message": "Task cancelled", "taskId": task_id}
    task = api.get(f"/api/task/{task_id}", token=owner).ok()
    assert task["status"] == "CANCELLED"
    assert task["updatedAt"] >= task["createdAt"]


def test_cancel_a_processing_task_frees_its_slot(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()
    assert api.server(server_id)["activeTasks"] == 1

    body = api.post(f"/api/task/{task_id}/cancel", token=owner).ok()

    assert body == {"message": "Task cancelled", "taskId": task_id}
    assert api.task(task_id)["status"] == "CANCELLED"
    assert api.server(server_id)["activeTasks"] == 0


def test_a_backend_report_after_cancel_is_409(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()
    api.post(f"/api/task/{task_id}/cancel", token=owner).ok()

    reply = api.put(f"/api/task/{task_id}", json={"status": "COMPLETED"}, token=api.service(server_id))

    reply.error(409)
    assert api.task(task_id)["status"] == "CANCELLED"
    assert api.server(server_id)["activeTasks"] == 0


def test_cancel_twice_is_409(api: Api) -> None:
    owner = api.user()
    task_id = api.create_task(owner)
    api.post(f"/api/task/{task_id}/cancel", token=owner).ok()
    api.post(f"/api/task/{task_id}/cancel", token=owner).error(409, mentions="CANCELLED")


def test_cancel_a_completed_task_is_409(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()
    api.put(f"/api/task/{task_id}", json={"status": "COMPLETED"}, token=api.service(server_id)).ok()
    api.post(f"/api/task/{task_id}/cancel", token=owner).error(409, mentions="COMPLETED")
    assert api.task(task_id)["status"] == "COMPLETED"


def test_cancel_another_users_task_is_404(api: Api) -> None:
    task_id = api.create_task(api.user())
    api.post(f"/api/task/{task_id}/cancel", token=api.user()).error(
        404, "Not found", details=f"Task not found: {task_id}"
    )
    assert api.task(task_id)["status"] == "PENDING"


def test_an_admin_may_cancel_any_task(api: Api) -> None:
    task_id = api.create_task(api.user())
    api.post(f"/api/task/{task_id}/cancel", token=api.admin).ok()
    assert api.task(task_id)["status"] == "CANCELLED"

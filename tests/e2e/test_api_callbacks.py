"""PUT /api/task/:id: a backend reports progress and outcome of the task it runs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from core.domain.ids import now_ms

from .harness import EXAMPLE_COMPLETED, Api


def test_the_assigned_server_completes_its_task_with_the_reference_body(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()
    before = now_ms()

    body = api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=api.service(server_id)).ok()

    assert body["id"] == task_id
    assert body["status"] == "COMPLETED"
    assert body["result"] == EXAMPLE_COMPLETED["result"]
    assert body["progress"] == 100
    task = api.get(f"/api/task/{task_id}", token=owner).ok()
    assert task["status"] == "COMPLETED"
    assert task["result"] == EXAMPLE_COMPLETED["result"]
    assert task["progress"] == 100
    assert task["serverId"] == server_id
    assert task["updatedAt"] >= before
    assert task["completedAt"] >= task["startedAt"]
    assert api.server(server_id)["activeTasks"] == 0


def test_the_task_scoped_callback_token_completes_the_task(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()

    token = api.callback(server_id, task_id, attempt=1)
    body = api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=token).ok()

    assert (body["status"], body["result"], body["progress"]) == (
        "COMPLETED",
        EXAMPLE_COMPLETED["result"],
        100,
    )
    assert api.get(f"/api/task/{task_id}", token=owner).ok()["status"] == "COMPLETED"


def test_a_callback_token_reads_only_its_own_task(api: Api) -> None:
    # GIVEN two tasks PROCESSING on one server, and the callback token of the first
    first, server_id, owner = api.processing_task()
    second = api.create_task(owner)
    api.start_processing(second, server_id)
    callback = api.callback(server_id, first, 1)
    # THEN it reads its task, and the other one is 404 (as its writes already were)
    assert api.get(f"/api/task/{first}", token=callback).ok()["id"] == first
    api.get(f"/api/task/{second}", token=callback).error(404, "Not found", mentions=second)
    api.put(f"/api/task/{second}", json={"progress": 5}, token=callback).error(404)
    # while the server's own token reads both
    assert api.get(f"/api/task/{second}", token=api.service(server_id)).ok()["id"] == second


def test_progress_updates_are_visible_to_the_owner(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()
    before = api.get(f"/api/task/{task_id}", token=owner).ok()

    body = api.put(
        f"/api/task/{task_id}", json={"status": "PROCESSING", "progress": 45}, token=api.service(server_id)
    ).ok()

    assert (body["status"], body["progress"]) == ("PROCESSING", 45)
    task = api.get(f"/api/task/{task_id}", token=owner).ok()
    assert task["status"] == "PROCESSING"
    assert task["progress"] == 45
    assert task["serverId"] == server_id
    assert task["updatedAt"] >= before["updatedAt"]
    assert api.server(server_id)["activeTasks"] == 1


def test_progress_without_a_status_keeps_the_task_processing(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()
    api.put(f"/api/task/{task_id}", json={"progress": 10}, token=api.service(server_id)).ok()
    api.put(f"/api/task/{task_id}", json={"progress": 70}, token=api.service(server_id)).ok()
    task = api.get(f"/api/task/{task_id}", token=owner).ok()
    assert (task["status"], task["progress"]) == ("PROCESSING", 70)


def test_a_failure_report_keeps_the_error(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()

    body = api.put(
        f"/api/task/{task_id}",
        json={"status": "FAILED", "error": "CUDA out of memory"},
        token=api.service(server_id),
    ).ok()

    assert (body["status"], body["error"]) == ("FAILED", "CUDA out of memory")
    task = api.get(f"/api/task/{task_id}", token=owner).ok()
    assert (task["status"], task["error"], task["result"]) == ("FAILED", "CUDA out of memory", None)
    assert api.server(server_id)["activeTasks"] == 0


def test_a_second_callback_after_completion_is_409_and_changes_nothing(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=api.service(server_id)).ok()
    done = api.task(task_id)
    metrics = api.metrics(server_id)["metrics"]

    for late in (
        {"status": "FAILED", "error": "late"},
        {"status": "COMPLETED", "result": {"other": True}},
        {"status": "PROCESSING", "progress": 5},
    ):
        api.put(f"/api/task/{task_id}", json=late, token=api.service(server_id)).error(
            409, mentions="COMPLETED"
        )

    assert api.task(task_id) == done
    assert api.metrics(server_id)["metrics"]["tasksProcessed"] == metrics["tasksProcessed"]
    assert api.server(server_id)["activeTasks"] == 0


def test_a_callback_on_a_pending_task_is_409(api: Api) -> None:
    task_id = api.create_task(api.user())
    api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=api.admin).error(409, mentions="PENDING")
    assert api.task(task_id)["status"] == "PENDING"


def test_a_callback_token_for_an_older_attempt_is_409(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    first = api.callback(server_id, task_id, attempt=1)
    api.end_attempt(task_id)  # attempt 1 lost; the task goes back to the queue ...
    api.start_processing(task_id, server_id)  # ... and attempt 2 runs on the same server
    before = api.task(task_id)
    assert before["attempts"] == 2

    api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=first).error(409)

    assert api.task(task_id) == before
    second = api.callback(server_id, task_id, attempt=2)
    assert api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=second).ok()["status"] == "COMPLETED"


def test_a_callback_token_from_a_server_the_task_left_is_409(api: Api) -> None:
    task_id, first_server, _ = api.processing_task()
    stale = api.callback(first_server, task_id, attempt=1)
    api.end_attempt(task_id)
    second_server = api.register_server()["serverId"]
    api.start_processing(task_id, second_server)

    api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=stale).error(409)

    task = api.task(task_id)
    assert (task["status"], task["serverId"]) == ("PROCESSING", second_server)


def test_a_callback_token_is_good_for_its_own_task_only(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    other_task = api.create_task(api.user())
    api.start_processing(other_task, server_id)

    token = api.callback(server_id, task_id, attempt=1)
    api.put(f"/api/task/{other_task}", json=EXAMPLE_COMPLETED, token=token).error(404, "Not found")

    assert api.task(other_task)["status"] == "PROCESSING"


def test_another_servers_token_is_404(api: Api) -> None:
    task_id, _, _ = api.processing_task()
    other = api.register_server()["serverId"]

    api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=api.service(other)).error(
        404, "Not found", details=f"Task not found: {task_id}"
    )

    assert api.task(task_id)["status"] == "PROCESSING"


def test_the_owner_may_not_report_on_their_own_task(api: Api) -> None:
    task_id, _, owner = api.processing_task()
    api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=owner).error(403, "Forbidden")
    assert api.task(task_id)["status"] == "PROCESSING"


def test_another_user_gets_404_not_403(api: Api) -> None:
    task_id, _, _ = api.processing_task()
    api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=api.user()).error(
        404, "Not found", details=f"Task not found: {task_id}"
    )


def test_an_admin_may_report(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    body = api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=api.admin).ok()
    assert body["status"] == "COMPLETED"
    assert api.server(server_id)["activeTasks"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"progress": 101}, "progress", id="progress-101"),
        pytest.param({"progress": -1}, "progress", id="progress-negative"),
        pytest.param({"progress": "45"}, "progress", id="progress-string"),
        pytest.param({"progress": 4.5}, "progress", id="progress-float"),
        pytest.param({"status": "DONE"}, "status", id="status-done"),
        pytest.param({"status": "completed"}, "status", id="status-lowercase"),
        pytest.param({"status": "PENDING"}, "status", id="status-pending"),
        pytest.param({"status": "CANCELLED"}, "status", id="status-cancelled"),
        pytest.param({"status": "TIMEOUT"}, "status", id="status-timeout"),
        pytest.param({"status": "COMPLETED", "outcome": 1}, "outcome", id="unknown-field"),
        pytest.param({"message": 12}, "message", id="message-int"),
    ],
)
def test_a_bad_report_is_400_and_changes_nothing(api: Api, body: dict[str, Any], field: str) -> None:
    task_id, server_id, _ = api.processing_task()
    before = api.task(task_id)

    api.put(f"/api/task/{task_id}", json=body, token=api.service(server_id)).error(
        400, "Invalid request", mentions=field
    )

    assert api.task(task_id) == before


def test_a_report_that_is_not_json_is_400(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    api.put(
        f"/api/task/{task_id}",
        content=b"status=COMPLETED",
        token=api.service(server_id),
        headers={"Content-Type": "application/json"},
    ).error(400, "Invalid request")


def test_a_report_without_a_token_is_401(api: Api) -> None:
    task_id, _, _ = api.processing_task()
    api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED).error(401, "Unauthorized")
    assert api.task(task_id)["status"] == "PROCESSING"


def test_concurrent_outcomes_have_exactly_one_winner(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    token = api.service(server_id)
    bodies = [
        {"status": "COMPLETED", "result": {"n": n}} if n % 2 else {"status": "FAILED", "error": f"e{n}"}
        for n in range(6)
    ]

    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda b: api.put(f"/api/task/{task_id}", json=b, token=token), bodies))

    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [409] * (len(bodies) - 1), [r.text for r in replies]
    winner = next(r.json() for r in replies if r.status_code == 200)
    task = api.task(task_id)
    assert (task["status"], task["result"], task["error"]) == (
        winner["status"],
        winner["result"],
        winner["error"],
    )
    metrics = api.metrics(server_id)["metrics"]
    assert metrics["tasksProcessed"] == 1
    assert metrics["successCount"] + metrics["failureCount"] == 1
    assert api.server(server_id)["activeTasks"] == 0


def test_result_and_error_values_round_trip(api: Api) -> None:
    result = {
        "scores": [0.1, 1e-7, 3.141592653589793, -0.0],
        "ok": False,
        "count": 0,
        "empty": [],
        "text": "héllo ✓ 日本",
        "nested": {"a": [None, {"b": {}}]},
        "big": 2**53 + 1,
    }
    done, server_id, owner = api.processing_task()
    api.put(
        f"/api/task/{done}", json={"status": "COMPLETED", "result": result}, token=api.service(server_id)
    ).ok()
    failed = api.create_task(owner)
    api.start_processing(failed, server_id)
    error = {"code": "OOM", "retryable": False, "detail": {"freeMiB": 12.5}}
    api.put(
        f"/api/task/{failed}", json={"status": "FAILED", "error": error}, token=api.service(server_id)
    ).ok()

    assert api.get(f"/api/task/{done}", token=owner).ok()["result"] == result
    assert api.get(f"/api/task/{failed}", token=owner).ok()["error"] == error


def test_a_large_result_for_a_large_task_is_kept(api: Api) -> None:
    """Each body is under the 256 KiB limit, so each request is valid: the task holds both."""
    owner = api.user()
    server_id = api.register_server()["serverId"]
    payload = {"frames": "p" * (200 * 1024)}
    task_id = api.create_task(owner, payload=payload)
    api.start_processing(task_id, server_id)
    result = {"frames": "r" * (200 * 1024)}

    reply = api.put(
        f"/api/task/{task_id}", json={"status": "COMPLETED", "result": result}, token=api.service(server_id)
    )

    assert reply.ok()["status"] == "COMPLETED"
    assert api.get(f"/api/task/{task_id}", token=owner).ok()["result"] == result
    assert api.server(server_id)["activeTasks"] == 0


# A callback token's progress report is written without reading the task first (one request in
# AWS); a failed write then reads the task to give the same answers as a report that read it.


def test_progress_with_an_older_attempts_token_is_409_and_changes_nothing(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    first = api.callback(server_id, task_id, attempt=1)
    api.end_attempt(task_id)
    api.start_processing(task_id, server_id)
    before = api.task(task_id)

    api.put(f"/api/task/{task_id}", json={"progress": 40}, token=first).error(409, mentions="attempt 1")

    assert api.task(task_id) == before


def test_progress_after_completion_is_409_naming_the_state(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    token = api.callback(server_id, task_id, attempt=1)
    api.put(f"/api/task/{task_id}", json=EXAMPLE_COMPLETED, token=token).ok()

    api.put(f"/api/task/{task_id}", json={"progress": 99, "status": "PROCESSING"}, token=token).error(
        409, mentions="COMPLETED"
    )

    assert api.task(task_id)["progress"] == 100


def test_progress_on_a_requeued_task_is_409(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    token = api.callback(server_id, task_id, attempt=1)
    api.end_attempt(task_id)  # back in the queue, PENDING

    api.put(f"/api/task/{task_id}", json={"progress": 10}, token=token).error(409, mentions="PENDING")

    assert api.task(task_id)["status"] == "PENDING"


def test_progress_for_an_unknown_task_with_its_callback_token_is_404(api: Api) -> None:
    _, server_id, _ = api.processing_task()
    token = api.callback(server_id, "task_gone123", attempt=1)

    api.put("/api/task/task_gone123", json={"progress": 10}, token=token).error(
        404, "Not found", details="Task not found: task_gone123"
    )


def test_progress_with_a_callback_token_moves_progress_and_keeps_it_processing(api: Api) -> None:
    task_id, server_id, _ = api.processing_task()
    token = api.callback(server_id, task_id, attempt=1)

    reply = api.put(f"/api/task/{task_id}", json={"progress": 70, "message": "encoding"}, token=token).ok()

    assert (reply["status"], reply["progress"], reply["serverId"]) == ("PROCESSING", 70, server_id)
    assert api.task(task_id)["progress"] == 70


def test_a_result_over_the_maximum_fails_the_task_saying_so_and_is_413(api: Api) -> None:
    task_id, server_id, owner = api.processing_task()
    token = api.callback(server_id, task_id, attempt=1)
    result = {"frames": "r" * (257 * 1024)}

    reply = api.put(f"/api/task/{task_id}", json={"status": "COMPLETED", "result": result}, token=token)

    assert reply.status_code == 413
    task = api.get(f"/api/task/{task_id}", token=owner).ok()
    assert task["status"] == "FAILED" and task["result"] is None
    assert task["error"].startswith("Result too large") and "256 KiB" in task["error"]
    assert api.server(server_id)["activeTasks"] == 0  # the slot is free at once, not at the timeout


def test_an_oversized_report_from_someone_else_fails_nothing(api: Api) -> None:
    task_id, _server_id, owner = api.processing_task()
    big = {"status": "COMPLETED", "result": {"frames": "r" * (257 * 1024)}}

    assert api.put(f"/api/task/{task_id}", json=big, token=owner).status_code in (403, 404)
    assert api.get(f"/api/task/{task_id}", token=owner).ok()["status"] == "PROCESSING"

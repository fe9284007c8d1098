"""The backend protocol: the predict body, and every kind of answer a backend can give."""

from __future__ import annotations

import json

import pytest

from core.domain.models import Endpoints, Server, Task, TaskStatus
from core.domain.protocol import Kind, classify, health_ok, predict_request, transport_failure


def task(**overrides: object) -> Task:
    fields: dict[str, object] = dict(
        id="task_1",
        owner="alice",
        type="image.resize",
        priority=7,
        payload={"url": "u"},
        capabilities=["image"],
        created_at=1,
        updated_at=1,
        queued_at=1,
        status=TaskStatus.PROCESSING,
        attempts=2,
        deadline=61_000,
    )
    fields.update(overrides)
    return Task(**fields)  # type: ignore[arg-type]


def server(api_key: str | None = "secret-key") -> Server:
    return Server(
        id="gpu-1",
        name="g",
        endpoints=Endpoints(predict="http://b/predict", health="http://b/h"),
        api_key=api_key,
        registered_at=0,
    )


def test_predict_body_is_a_superset_of_both_protocols() -> None:
    request = predict_request(
        task(), server(), callback_url="http://gw/api/task/task_1", callback_token="tok", now=1_000
    )
    body = json.loads(request.body)
    assert body["id"] == body["task_id"] == "task_1"
    assert body["request"] == {
        "type": "image.resize",
        "priority": 7,
        "payload": {"url": "u"},
        "capabilities": ["image"],
        "async": True,
    }
    assert {k: body[k] for k in ("type", "priority", "payload", "capabilities", "async")} == body["request"]
    assert (body["callback_url"], body["callback_token"], body["timeout"], body["deadline"]) == (
        "http://gw/api/task/task_1",
        "tok",
        60_000,
        61_000,
    )
    assert request.headers["Authorization"] == "Bearer secret-key"
    assert request.headers["Idempotency-Key"] == "task_1:2"
    assert request.timeout_s == 60.0


def test_no_api_key_no_authorization_header() -> None:
    request = predict_request(task(), server(api_key=None), callback_url="u", callback_token="t", now=0)
    assert "Authorization" not in request.headers


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (202, b"", Kind.ACCEPTED),
        (200, b'{"status": "accepted"}', Kind.ACCEPTED),
        (200, b'{"status": "queued"}', Kind.ACCEPTED),
        (200, b'{"status": "PROCESSING"}', Kind.ACCEPTED),
        (200, b'{"status": "error", "error": "bad input"}', Kind.FAILED),
        (200, b'{"output": 1}', Kind.COMPLETED),
        (201, b"[1, 2]", Kind.COMPLETED),
        (429, b"", Kind.BUSY),
        (503, b"slow down", Kind.BUSY),
        (500, b"boom", Kind.RETRY),
        (502, b"", Kind.RETRY),
        (400, b'{"error": "no such model"}', Kind.FAILED),
        (404, b"", Kind.FAILED),
        (304, b"", Kind.RETRY),
    ],
)
def test_answers_are_classified(status: int, body: bytes, kind: Kind) -> None:
    assert classify(status, body).kind is kind


def test_inline_result_is_the_result_field_or_the_whole_body() -> None:
    assert classify(200, b'{"result": {"x": 1}, "status": "done"}').result == {"x": 1}
    assert classify(200, b'{"x": 1}').result == {"x": 1}
    assert classify(200, b"plain text").result == "plain text"
    assert classify(200, b"").result is None


def test_errors_carry_the_backends_words_bounded() -> None:
    assert classify(400, b'{"error": "no such model"}').error == "Backend answered 400: no such model"
    assert classify(500, b"x" * 10_000).error is not None
    assert len(classify(500, b"x" * 10_000).error or "") <= 2000


def test_transport_failure_is_a_failed_attempt() -> None:
    outcome = transport_failure(ConnectionRefusedError(), "gpu-1")
    assert outcome.kind is Kind.RETRY
    assert outcome.error == "Server gpu-1 unreachable (ConnectionRefusedError)"


def test_health_must_name_the_registered_server_if_it_names_one() -> None:
    assert health_ok(200, b"", "gpu-1") == (True, None)
    assert health_ok(200, b'{"model": {"server_id": "gpu-1"}}', "gpu-1") == (True, None)
    healthy, why = health_ok(200, b'{"model": {"server_id": "gpu-9"}}', "gpu-1")
    assert not healthy and "gpu-9" in (why or "")
    assert health_ok(503, b"", "gpu-1")[0] is False


def test_an_inline_result_over_the_maximum_fails_the_task_saying_so() -> None:
    from core.domain.protocol import MAX_RESULT_BYTES, Kind, classify

    big = json.dumps({"result": "r" * MAX_RESULT_BYTES}).encode()
    outcome = classify(200, big)
    assert outcome.kind is Kind.FAILED and outcome.result is None
    assert outcome.error is not None and outcome.error.startswith("Result too large")
    # An acknowledgement is not a result, whatever its size; a result at the maximum is kept.
    assert classify(202, big).kind is Kind.ACCEPTED
    exact = b'"' + b"r" * (MAX_RESULT_BYTES - 2) + b'"'
    assert classify(200, exact).kind is Kind.COMPLETED

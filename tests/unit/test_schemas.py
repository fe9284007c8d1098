"""Request validation: errors that name the field, in the reference's words."""

from __future__ import annotations

import json

import pytest

from core.domain.schemas import CreateTask, RegisterServer, UpdateTask, decode
from core.errors import ValidationError

VALID = {"type": "video-processing", "priority": 1, "payload": {"video_url": "https://example.com/v.mp4"}}


def body(**changes: object) -> bytes:
    data = {**VALID, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def test_the_references_example_decodes() -> None:
    task = decode(body(capabilities=["video"], **{"async": True}), CreateTask)
    assert task.type == "video-processing"
    assert task.capabilities == ["video"]
    assert task.is_async is True


@pytest.mark.parametrize(
    ("raw", "details"),
    [
        (body(priority=...), "Missing required field: priority"),
        (body(type=...), "Missing required field: type"),
        (body(payload=...), "Missing required field: payload"),
        (body(priority="1"), "Invalid field priority: Expected `int`, got `str`"),
        (body(priority=1.5), "Invalid field priority: Expected `int`, got `float`"),
        (body(priority=True), "Invalid field priority: Expected `int`, got `bool`"),
        (body(priority=11), "Invalid field priority: Expected `int` <= 10"),
        (body(priority=-1), "Invalid field priority: Expected `int` >= 0"),
        (body(payload=[1]), "Invalid field payload: Expected `object`, got `array`"),
        (body(extra=1), "Unknown field: extra"),
        (body(capabilities=[1]), "Invalid field capabilities[0]: Expected `str`, got `int`"),
        (body(timeout=0), "Invalid field timeout: Expected `int` >= 1"),
        (b"[]", "Invalid request body: Expected `object`, got `array`"),
        (b"", "Request body is empty; expected a JSON object"),
    ],
)
def test_bad_task_bodies_name_the_field(raw: bytes, details: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode(raw, CreateTask)
    assert caught.value.details == details


def test_bad_type_pattern_names_the_field() -> None:
    with pytest.raises(ValidationError, match=r"^Invalid field type: "):
        decode(body(type="Video Processing"), CreateTask)


def test_malformed_json() -> None:
    with pytest.raises(ValidationError, match=r"^Malformed JSON: "):
        decode(b'{"type": ', CreateTask)


def test_deeply_nested_payload_is_a_clear_error_or_accepted_not_a_crash() -> None:
    raw = b'{"type":"t","priority":1,"payload":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    try:
        decode(raw, CreateTask)
    except ValidationError as exc:
        assert exc.details.startswith("Malformed JSON")


def test_nested_fields_are_named_with_their_path() -> None:
    raw = json.dumps({"name": "n", "endpoints": {"health": "http://h"}}).encode()
    with pytest.raises(ValidationError) as caught:
        decode(raw, RegisterServer)
    assert caught.value.details == "Missing required field: endpoints.predict"


@pytest.mark.parametrize(
    ("field", "value"), [("maxConcurrent", 0), ("maxConcurrent", 1001), ("priority", 0), ("priority", 101)]
)
def test_server_ranges(field: str, value: int) -> None:
    raw = json.dumps({"name": "n", "endpoints": {"predict": "http://p", "health": "http://h"}, field: value})
    with pytest.raises(ValidationError, match=f"Invalid field {field}"):
        decode(raw.encode(), RegisterServer)


def test_update_status_is_limited_to_what_a_backend_may_report() -> None:
    with pytest.raises(ValidationError, match="Invalid field status"):
        decode(b'{"status": "PENDING"}', UpdateTask)
    assert decode(b'{"status": "COMPLETED", "result": [1, 2]}', UpdateTask).result == [1, 2]


# -- the OpenAPI document says exactly what is accepted (security review, finding 6) ------------


def test_a_whole_number_written_as_a_float_is_an_integer() -> None:
    """JSON Schema's `integer` includes 79.0; the server reads it as 79, in integer fields only."""
    from core.domain import schemas

    body = b'{"type": "x", "priority": 5.0, "timeout": 60000.0, "payload": {"ratio": 2.0}}'
    task = schemas.decode(body, schemas.CreateTask)
    assert (task.priority, task.timeout, task.payload) == (5, 60000, {"ratio": 2.0})
    assert isinstance(task.payload["ratio"], float)  # the payload is the user's, untouched
    with pytest.raises(ValidationError, match="priority"):
        schemas.decode(b'{"type": "x", "priority": 5.5, "payload": {}}', schemas.CreateTask)
    with pytest.raises(ValidationError, match="priority"):
        schemas.decode(b'{"type": "x", "priority": "5", "payload": {}}', schemas.CreateTask)
    assert schemas.decode(b'{"activeTasks": 3.0}', schemas.Heartbeat).active_tasks == 3


@pytest.mark.parametrize(
    ("date", "valid"),
    [
        ("2024-02-29", True),
        ("2000-02-29", True),
        ("0004-02-29", True),
        ("0001-01-01", True),
        ("9999-12-31", True),
        ("2023-02-29", False),
        ("1900-02-29", False),
        ("0000-02-29", False),
        ("0000-00-00", False),
        ("2024-04-31", False),
        ("2024-13-01", False),
        ("2024-1-01", False),
    ],
)
def test_the_documented_date_pattern_is_exactly_the_dates_the_server_reads(date: str, valid: bool) -> None:
    import datetime
    import re

    from core.domain.replies import ISO_DATE

    assert bool(re.fullmatch(ISO_DATE, date)) is valid
    try:
        datetime.date.fromisoformat(date)
        parsed = len(date) == 10
    except ValueError:
        parsed = False
    assert parsed is valid


def test_a_cursor_is_a_position_the_document_can_state() -> None:
    import re

    from core.services import task_listing

    cursor = task_listing.encode_cursor("1704557355000#task_abc")
    assert re.fullmatch(task_listing.CURSOR_PATTERN, cursor)
    assert task_listing.decode_cursor(cursor) == "1704557355000#task_abc"
    # the base64 form of earlier releases is still read
    assert task_listing.decode_cursor("MTcwNDU1NzM1NTAwMCN0YXNrX2FiYw") == "1704557355000#task_abc"

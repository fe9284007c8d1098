"""Request bodies: the one definition that both validates requests and documents them.

Decoding is msgspec's (fast, strict: no unknown fields, no type coercion); its messages are
rewritten to name the field the way the reference does ("Missing required field: priority").
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from core.errors import ValidationError

TASK_TYPE = r"^[a-z0-9][a-z0-9._-]{0,63}$"
LABEL = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
SERVER_ID = r"^[A-Za-z0-9_-]{1,64}$"
DAY_MS = 86_400_000

Label = Annotated[str, msgspec.Meta(pattern=LABEL, description="A capability or group name")]
Labels = Annotated[list[Label], msgspec.Meta(max_length=32)]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: unknown fields are an error, not silently dropped."""


class CreateTask(Request, rename={"is_async": "async"}, kw_only=True):
    type: Annotated[str, msgspec.Meta(pattern=TASK_TYPE, description="Task type")]
    priority: Annotated[int, msgspec.Meta(ge=0, le=10, description="0-10, higher first")]
    payload: dict[str, Any]
    capabilities: Labels = []
    is_async: bool = True
    timeout: Annotated[int, msgspec.Meta(ge=1, le=DAY_MS, description="Execution timeout, ms")] | None = None
    webhook: Url | None = None


class UpdateTask(Request, kw_only=True):
    status: Literal["PROCESSING", "COMPLETED", "FAILED"] | None = None
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    result: Any = None
    error: Any = None
    message: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class EndpointsBody(Request, kw_only=True):
    predict: Url
    health: Url
    metrics: Url | None = None
    cancel: Url | None = None


class RegisterServer(Request, rename={"api_key": "apiKey", "max_concurrent": "maxConcurrent"}, kw_only=True):
    id: Annotated[str, msgspec.Meta(pattern=SERVER_ID)] | None = None
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    endpoints: EndpointsBody
    api_key: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    capabilities: Labels = []
    groups: Labels = []
    priority: Annotated[int, msgspec.Meta(ge=1, le=100, description="Weight")] = 1


class Heartbeat(Request, rename={"active_tasks": "activeTasks"}, kw_only=True):
    status: Literal["healthy", "unhealthy"] = "healthy"
    active_tasks: Annotated[int, msgspec.Meta(ge=0)] | None = None
    metrics: dict[str, Any] = {}


class Maintenance(Request, kw_only=True):
    maintenance: bool
    reason: Annotated[str, msgspec.Meta(max_length=512)] | None = None


R = TypeVar("R", bound=Request)

_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def field_message(error: msgspec.ValidationError) -> str:
    """Rewrite msgspec's message so it starts with what is wrong and names the field."""
    text = str(error)
    path = ""
    if match := _AT.search(text):
        path = match["path"]
        text = text[: match.start()]
    if match := _MISSING.match(text):
        return f"Missing required field: {_join(path, match['field'])}"
    if match := _UNKNOWN.match(text):
        return f"Unknown field: {_join(path, match['field'])}"
    if not path:
        return f"Invalid request body: {text}"
    return f"Invalid field {path}: {text}"


def decode(body: bytes, schema: type[R]) -> R:
    if not body.strip():
        raise ValidationError("Request body is empty; expected a JSON object")
    try:
        return msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        raise ValidationError(field_message(exc)) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"Malformed JSON: {str(exc).removeprefix('JSON is malformed: ')}") from None
    except RecursionError:
        raise ValidationError("Malformed JSON: nested too deeply") from None

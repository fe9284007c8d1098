"""Request bodies: the one definition that both validates requests and documents them.

Decoding is msgspec's (fast, strict: no unknown fields, no type coercion); its messages are
rewritten to name the field the way the reference does ("Missing required field: priority").
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from core.domain.balancer import ALGORITHMS
from core.errors import ValidationError

TASK_TYPE = r"^[a-z0-9][a-z0-9._-]{0,63}$"
LABEL = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
SERVER_ID = r"^[A-Za-z0-9_-]{1,64}$"
DAY_MS = 86_400_000

Label = Annotated[str, msgspec.Meta(pattern=LABEL, description="A capability or group name")]
Labels = Annotated[list[Label], msgspec.Meta(max_length=32)]
# An http(s) URL as core.domain.urls reads it: a name of LDH labels (or a dotted IPv4), an
# optional port 1-65535, then a path and query without spaces or backslashes. The server
# refuses more than this says (metadata addresses; private ones for webhooks): 400 naming the field.
_LABEL_RE = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT_RE = r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_PATH_RE = r"(?:[/?][!$&'()*+,;=:@%/?A-Za-z0-9._~-]*)?"
URL_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://{_LABEL_RE}(?:\.{_LABEL_RE})*{_PORT_RE}{_PATH_RE}$"
# A webhook's host must be a public name: its last label starts with a letter and is no
# longer than 8 (so neither an IP address nor `localhost`).
WEBHOOK_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:{_LABEL_RE}\.)+[A-Za-z](?:[A-Za-z0-9-]{{0,6}}[A-Za-z0-9])?{_PORT_RE}{_PATH_RE}$"
# In the document only: core.domain.urls checks the URL itself and says which rule it broke.
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048, extra_json_schema={"pattern": URL_PATTERN})]
WebhookUrl = Annotated[
    str, msgspec.Meta(min_length=1, max_length=2048, extra_json_schema={"pattern": WEBHOOK_PATTERN})
]


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: unknown fields are an error, not silently dropped."""


class CreateTask(Request, rename={"is_async": "async"}, kw_only=True):
    type: Annotated[str, msgspec.Meta(pattern=TASK_TYPE, description="Task type")]
    priority: Annotated[int, msgspec.Meta(ge=0, le=10, description="0-10, higher first")]
    payload: dict[str, Any]
    capabilities: Labels = []
    is_async: bool = True
    timeout: Annotated[int, msgspec.Meta(ge=1, le=DAY_MS, description="Execution timeout, ms")] | None = None
    webhook: WebhookUrl | None = None


class UpdateTask(Request, kw_only=True):
    status: Literal["PROCESSING", "COMPLETED", "FAILED"] | None = None
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    result: Any = None
    error: Any = None
    message: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class AppendOutput(Request, kw_only=True):
    data: Annotated[Any, msgspec.Meta(description="Any JSON value: one chunk of the task's output")]


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


@functools.cache
def _integer_fields(schema: type[msgspec.Struct]) -> frozenset[str]:
    """The JSON names of a body's integer fields (JSON Schema's `integer` includes 79.0)."""
    info = msgspec.inspect.type_info(schema)
    assert isinstance(info, msgspec.inspect.StructType)
    names = set()
    for field in info.fields:
        kinds = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
        kinds = tuple(k.type if isinstance(k, msgspec.inspect.Metadata) else k for k in kinds)
        if any(isinstance(kind, msgspec.inspect.IntType) for kind in kinds):
            names.add(field.encode_name)
    return frozenset(names)


def _whole_numbers_as_int(body: bytes, schema: type[R]) -> bytes:
    """`79.0` for an integer field is an integer, as the OpenAPI document (JSON Schema) says."""
    if b"." not in body and b"e" not in body and b"E" not in body:
        return body  # no float anywhere: the common case costs one scan
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return body  # decode() says what is wrong with it
    if not isinstance(data, dict):
        return body
    changed = False
    for name in _integer_fields(schema):
        value = data.get(name)
        if isinstance(value, float) and value.is_integer():
            data[name] = int(value)
            changed = True
    return msgspec.json.encode(data) if changed else body


def decode(body: bytes, schema: type[R]) -> R:
    if not body.strip():
        raise ValidationError("Request body is empty; expected a JSON object")
    try:
        return msgspec.json.decode(_whole_numbers_as_int(body, schema), type=schema)
    except msgspec.ValidationError as exc:
        raise ValidationError(field_message(exc)) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"Malformed JSON: {str(exc).removeprefix('JSON is malformed: ')}") from None
    except RecursionError:
        raise ValidationError("Malformed JSON: nested too deeply") from None


class SetAlgorithm(Request, kw_only=True):
    algorithm: Annotated[
        str,
        msgspec.Meta(
            max_length=64,
            description="round-robin, least-connections, weighted-round-robin, random, response-time or p2c",
            extra_json_schema={"enum": list(ALGORITHMS)},
        ),
    ]

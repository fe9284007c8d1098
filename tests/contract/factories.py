"""Builders for the contract suite: unique ids per call, fixed times, strict comparison."""

from __future__ import annotations

import enum
import itertools
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from core.domain.models import Endpoints, Server, ServerStatus, Task, TaskStatus
from core.ports.storage import Store

NOW = 1_700_000_000_000  # epoch ms
HOUR = 3_600_000

_serial = itertools.count(1)
_run = uuid.uuid4().hex[:6]

T = TypeVar("T")


def unique_id(prefix: str) -> str:
    return f"{prefix}-{_run}-{next(_serial)}"


def make_task(**overrides: Any) -> Task:
    fields: dict[str, Any] = {
        "id": unique_id("task"),
        "owner": "alice",
        "type": "image.generate",
        "priority": 5,
        "payload": {"prompt": "a cat"},
        "created_at": NOW,
        "updated_at": NOW,
        "queued_at": NOW,
    }
    fields.update(overrides)
    return Task(**fields)


def make_server(**overrides: Any) -> Server:
    server_id = overrides.pop("id", None) or unique_id("srv")
    fields: dict[str, Any] = {
        "id": server_id,
        "name": f"gpu box {server_id}",
        "endpoints": Endpoints(
            predict=f"http://{server_id}.local:8080/predict",
            health=f"http://{server_id}.local:8080/health",
        ),
        "registered_at": NOW,
    }
    fields.update(overrides)
    return Server(**fields)


def claim_changes(task: Task, server_id: str, *, deadline: int = NOW + HOUR) -> dict[str, Any]:
    """What the dispatcher writes when it sends `task` to `server_id`."""
    return {
        "status": TaskStatus.PROCESSING,
        "server_id": server_id,
        "attempts": task.attempts + 1,
        "started_at": NOW + 10,
        "updated_at": NOW + 10,
        "deadline": deadline,
    }


def completed_changes(result: Any = None) -> dict[str, Any]:
    return {
        "status": TaskStatus.COMPLETED,
        "progress": 100,
        "result": {"ok": True} if result is None else result,
        "completed_at": NOW + 500,
        "updated_at": NOW + 500,
        "deadline": None,
        "expires_at": (NOW + 7 * 24 * HOUR) // 1000,
    }


def applied(item: T, changes: Mapping[str, Any]) -> T:
    return msgspec.structs.replace(item, **changes)  # type: ignore[type-var]


def put_pending(store: Store, **overrides: Any) -> Task:
    task = make_task(**overrides)
    store.put_task(task)
    return task


def put_online_server(store: Store, **overrides: Any) -> Server:
    overrides.setdefault("status", ServerStatus.ONLINE)
    server = make_server(**overrides)
    store.put_server(server)
    return server


def active_tasks(store: Store, server_id: str) -> int:
    server = store.get_server(server_id)
    assert server is not None, f"server {server_id} vanished"
    return server.active_tasks


def assert_turns_cycle(turns: list[int], counters: int) -> None:
    """Turns of one sequence: with one counter, 1..len(turns), each once; with more, each
    counter's a run of its own, so every residue of a small modulus (a round-robin over that
    many servers) comes up within `counters` of evenly."""
    assert all(type(turn) is int and turn >= 1 for turn in turns)
    if counters == 1:
        assert sorted(turns) == list(range(1, len(turns) + 1))
    for modulus in (2, 3, 5, 7):
        counts = Counter(turn % modulus for turn in turns)
        assert all(abs(counts[r] - len(turns) / modulus) < counters for r in range(modulus)), counts


def strictly_equal(got: Any, expected: Any) -> bool:
    """== that also insists on the same types all the way down (no Decimal for float, no
    1 for 1.0, no str for an enum, no tuple for a list)."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, msgspec.Struct):
        return all(
            strictly_equal(getattr(got, name), getattr(expected, name)) for name in expected.__struct_fields__
        )
    if isinstance(expected, dict):
        return got.keys() == expected.keys() and all(strictly_equal(got[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        return len(got) == len(expected) and all(
            strictly_equal(g, e) for g, e in zip(got, expected, strict=True)
        )
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(got)
    if isinstance(expected, enum.Enum):
        return got is expected
    return bool(got == expected)


def differences(got: Any, expected: Any, path: str = "") -> list[str]:
    """Where strictly_equal fails, for assertion messages."""
    if strictly_equal(got, expected):
        return []
    if isinstance(expected, msgspec.Struct) and type(got) is type(expected):
        return [
            diff
            for name in expected.__struct_fields__
            for diff in differences(getattr(got, name), getattr(expected, name), f"{path}.{name}")
        ]
    if isinstance(expected, dict) and isinstance(got, dict) and got.keys() == expected.keys():
        return [diff for k in expected for diff in differences(got[k], expected[k], f"{path}[{k!r}]")]
    if isinstance(expected, list) and isinstance(got, list) and len(got) == len(expected):
        return [
            diff
            for i, (g, e) in enumerate(zip(got, expected, strict=True))
            for diff in differences(g, e, f"{path}[{i}]")
        ]
    return [
        f"{path or '<root>'}: got {got!r} ({type(got).__name__}), "
        f"expected {expected!r} ({type(expected).__name__})"
    ]


def assert_same(got: Any, expected: Any) -> None:
    diffs = differences(got, expected)
    assert not diffs, "\n".join(diffs)


@dataclass
class Outcome:
    index: int
    value: Any = None
    error: BaseException | None = None


def run_concurrently(n: int, work: Callable[[int], Any], *, timeout: float = 30.0) -> list[Outcome]:
    """Run work(0..n-1) on n threads released together by a barrier; return each outcome."""
    barrier = threading.Barrier(n, timeout=timeout)

    def one(i: int) -> Outcome:
        barrier.wait()
        try:
            return Outcome(i, value=work(i))
        except Exception as exc:
            return Outcome(i, error=exc)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        return [f.result(timeout=timeout) for f in futures]


def split(outcomes: list[Outcome], *errors: type[BaseException]) -> tuple[list[Outcome], ...]:
    """(successes, failures of errors[0], failures of errors[1], ...); anything else fails."""
    unexpected = [o for o in outcomes if o.error is not None and not isinstance(o.error, errors)]
    assert not unexpected, f"unexpected errors: {[repr(o.error) for o in unexpected]}"
    wins = [o for o in outcomes if o.error is None]
    return (wins, *[[o for o in outcomes if isinstance(o.error, e)] for e in errors])

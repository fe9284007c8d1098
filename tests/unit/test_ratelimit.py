"""Rate limits: which bucket a request falls in, the window it is counted in, the decision and
its headers, and how the `authenticated` wrapper puts them on responses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from core.config import Config, RateLimits
from core.domain import auth
from core.errors import NotFoundError, RateLimitedError, UnavailableError
from core.local.queue import CallbackQueue
from core.local.sqlite import SqliteStore
from core.services import ratelimit
from core.services.context import Context
from handlers._http import authenticated, create_app, json_response

SECRET = "unit-test-secret-" * 4
# 2024-01-06 16:09:15 UTC: 45 s before the window that ends at the reference's 1704557400.
NOW_MS = 1_704_557_355_000
WINDOW = 1_704_557_355 // 60
RESET_S = 1_704_557_400

ALICE = auth.Principal(sub="alice", roles=frozenset({auth.USER}))
BOB = auth.Principal(sub="bob", roles=frozenset({auth.USER}))
ADMIN = auth.Principal(sub="root", roles=frozenset({auth.ADMIN}))
BACKEND = auth.Principal(sub="server:gpu-1", roles=frozenset({auth.SERVICE}), server_id="gpu-1")


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW_MS)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(str(tmp_path / "db"))
    yield opened
    opened.close()


def make_context(store: SqliteStore, clock: Clock, **limits: int) -> Context:
    config = Config.from_env({}, jwt_secret=SECRET, rate_limits=RateLimits(**limits))
    return Context(store=store, queue=CallbackQueue(), config=config, clock=clock)


# -- buckets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "principal", "bucket"),
    [
        ("POST", "/api/task", ALICE, "task_create"),
        ("POST", "/api/task", ADMIN, "task_create"),
        ("GET", "/api/task/{id}", ALICE, "default"),
        ("POST", "/api/task/{id}/retry", ALICE, "default"),
        ("POST", "/api/task/{id}/cancel", ALICE, "default"),
        ("POST", "/api/servers", ADMIN, "server_register"),
        ("GET", "/api/servers", ADMIN, "default"),
        ("DELETE", "/api/servers/{id}", ADMIN, "default"),
        # a service principal is a backend: all its requests share the service bucket
        ("PUT", "/api/task/{id}", BACKEND, "service"),
        ("POST", "/api/servers/{id}/heartbeat", BACKEND, "service"),
        ("POST", "/api/task", BACKEND, "service"),
        # an admin reporting progress by hand is not a backend
        ("PUT", "/api/task/{id}", ADMIN, "default"),
    ],
)
def test_bucket_for_request(method: str, path: str, principal: auth.Principal, bucket: str) -> None:
    assert ratelimit.bucket_for(method, path, principal) == bucket


def test_admin_with_service_role_is_not_in_the_service_bucket() -> None:
    both = auth.Principal(sub="ops", roles=frozenset({auth.ADMIN, auth.SERVICE}), server_id="s")
    assert ratelimit.bucket_for("POST", "/api/servers", both) == "server_register"


@pytest.mark.parametrize(
    ("bucket", "limit"),
    [("default", 1), ("task_create", 2), ("server_register", 3), ("service", 4)],
)
def test_each_bucket_has_its_own_limit(bucket: ratelimit.Bucket, limit: int) -> None:
    limits = RateLimits(default=1, task_create=2, server_register=3, service=4)
    assert ratelimit.limit_for(limits, bucket) == limit


def test_defaults_are_the_documented_limits() -> None:
    limits = Config.from_env({}).rate_limits
    assert (limits.task_create, limits.server_register, limits.default, limits.service) == (50, 10, 100, 1000)


# -- the window ---------------------------------------------------------------------------


def test_window_key_names_principal_bucket_and_window_number() -> None:
    assert ratelimit.window_key(ALICE, "task_create", WINDOW) == f"alice#task_create#{WINDOW}"


def test_check_counts_in_the_current_window_and_expires_it_at_its_end(
    store: SqliteStore, clock: Clock
) -> None:
    # GIVEN a limit of 50 task creations
    ctx = make_context(store, clock, task_create=50)

    # WHEN alice creates a task
    decision = ratelimit.check(ctx, ALICE, "task_create")

    # THEN the hit is in her task_create window for this minute, which ends at RESET_S
    assert decision == ratelimit.RateDecision(limit=50, remaining=49, reset_s=RESET_S)
    assert store.hit_rate_window(f"alice#task_create#{WINDOW}", expires_at=RESET_S) == 2
    # kept through the next window (it weighs on it), and gone after that
    store.purge_expired(RESET_S)
    assert store.rate_window_hits(f"alice#task_create#{WINDOW}") == 2
    store.purge_expired(RESET_S + 60)
    assert store.rate_window_hits(f"alice#task_create#{WINDOW}") == 0


def test_decision_headers(store: SqliteStore, clock: Clock) -> None:
    ctx = make_context(store, clock, default=100)
    first = ratelimit.check(ctx, ALICE, "default")
    second = ratelimit.check(ctx, ALICE, "default")
    assert first is not None and second is not None
    assert first.headers() == {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "99",
        "X-RateLimit-Reset": "1704557400",
    }
    assert second.headers()["X-RateLimit-Remaining"] == "98"


def test_over_the_limit_raises_429_with_an_honest_retry_after(store: SqliteStore, clock: Clock) -> None:
    # GIVEN alice has used her 3 task creations, 17 s before the window ends
    ctx = make_context(store, clock, task_create=3)
    clock.now_ms = (RESET_S - 17) * 1000
    remaining = [ratelimit.check(ctx, ALICE, "task_create") for _ in range(3)]
    assert [d.remaining for d in remaining if d is not None] == [2, 1, 0]

    # WHEN she creates a fourth
    with pytest.raises(RateLimitedError) as fourth:
        ratelimit.check(ctx, ALICE, "task_create")

    # THEN it is refused (whole seconds, rounded up) until enough of this window has slid out
    # of the last minute: 17 s to the edge, then a third of a window ((3 - 2) / 3 of it)
    wait = fourth.value.retry_after_s
    assert wait == 37
    assert fourth.value.details == (
        "Rate limit of 3 requests per minute exceeded for task creation; retry after 37 s"
    )
    assert isinstance(fourth.value, ratelimit.RateLimitExceededError)
    assert fourth.value.decision == ratelimit.RateDecision(limit=3, remaining=0, reset_s=RESET_S)
    # and a client that waits that long is served
    clock.now_ms += wait * 1000
    assert ratelimit.check(ctx, ALICE, "task_create") is not None


def test_retry_after_is_at_least_one_second(store: SqliteStore, clock: Clock) -> None:
    ctx = make_context(store, clock, default=3)
    clock.now_ms = NOW_MS
    for _ in range(3):
        ratelimit.check(ctx, ALICE, "default")
    with pytest.raises(RateLimitedError) as refused:
        ratelimit.check(ctx, ALICE, "default")
    assert refused.value.retry_after_s >= 1


def test_no_burst_across_a_window_edge(store: SqliteStore, clock: Clock) -> None:
    """Security review, finding 5: with fixed windows, 10 requests a second before the edge
    and 10 more just after were all served: twice the limit within two seconds."""
    ctx = make_context(store, clock, task_create=10)
    clock.now_ms = RESET_S * 1000 - 1000
    for _ in range(10):
        ratelimit.check(ctx, ALICE, "task_create")
    clock.now_ms = RESET_S * 1000 + 500  # the next window
    with pytest.raises(RateLimitedError):
        ratelimit.check(ctx, ALICE, "task_create")
    # Capacity comes back as the earlier window slides out: after half a window, about half.
    clock.now_ms = RESET_S * 1000 + 31_000
    served = 0
    for _ in range(10):
        try:
            ratelimit.check(ctx, ALICE, "task_create")
            served += 1
        except RateLimitedError:
            break
    assert served == 5  # 10 * (1 - 31/60) = 4.8 of the past minute still weighs: 5 more fit


def test_a_greedy_client_gets_the_limit_per_minute_on_average(store: SqliteStore, clock: Clock) -> None:
    """A client calling every 100 ms for ten minutes (fake clock): served about the limit
    per minute, and never the limit twice within a few seconds."""
    ctx = make_context(store, clock, default=30)
    start = RESET_S * 1000
    served: list[int] = []
    for step in range(6000):
        clock.now_ms = start + step * 100
        try:
            ratelimit.check(ctx, ALICE, "default")
            served.append(clock.now_ms)
        except RateLimitedError:
            pass
    assert 250 <= len(served) <= 330, len(served)  # 30 a minute, ten minutes
    for i, at in enumerate(served):  # within any 5 s: at most the limit (a burst), never 2x
        assert sum(1 for later in served[i:] if later < at + 5000) <= 30


def test_the_closed_window_is_read_once_per_process(store: SqliteStore, clock: Clock) -> None:
    ctx = make_context(store, clock, default=100)
    reads: list[str] = []
    real = store.rate_window_hits

    def counted(key: str) -> int:
        reads.append(key)
        return real(key)

    store.rate_window_hits = counted  # type: ignore[method-assign]
    for _ in range(5):
        ratelimit.check(ctx, ALICE, "default")
    assert reads == [f"alice#default#{WINDOW - 1}"]


def test_principals_and_buckets_have_separate_windows(store: SqliteStore, clock: Clock) -> None:
    ctx = make_context(store, clock, task_create=1, default=1)
    ratelimit.check(ctx, ALICE, "task_create")
    with pytest.raises(RateLimitedError):
        ratelimit.check(ctx, ALICE, "task_create")
    bob = ratelimit.check(ctx, BOB, "task_create")
    other_bucket = ratelimit.check(ctx, ALICE, "default")
    assert bob is not None and bob.remaining == 0
    assert other_bucket is not None and other_bucket.remaining == 0


def test_limit_0_is_off_and_writes_nothing(store: SqliteStore, clock: Clock) -> None:
    # GIVEN task creation unlimited, the other buckets limited
    ctx = make_context(store, clock, task_create=0, default=1)

    # WHEN alice creates many tasks
    decisions = [ratelimit.check(ctx, ALICE, "task_create") for _ in range(10)]

    # THEN none is limited or counted
    assert decisions == [None] * 10
    assert store.hit_rate_window(f"alice#task_create#{WINDOW}", expires_at=RESET_S) == 1
    # and the other buckets still are
    ratelimit.check(ctx, ALICE, "default")
    with pytest.raises(RateLimitedError):
        ratelimit.check(ctx, ALICE, "default")


# -- the authenticated wrapper ------------------------------------------------------------


class UnavailableStore(SqliteStore):
    def hit_rate_window(self, key: str, *, expires_at: int, amount: int = 1) -> int:
        raise UnavailableError("DynamoDB is throttling")


@authenticated
async def found(request: Request) -> Response:
    return json_response({"ok": True})


@authenticated
async def missing(request: Request) -> Response:
    raise NotFoundError("Task not found: task_x")


@authenticated
async def crashing(request: Request) -> Response:
    raise RuntimeError("boom")


ROUTES = [
    Route("/api/task", found, methods=["POST"]),
    Route("/api/task/{id}", missing, methods=["GET"]),
    Route("/api/servers", crashing, methods=["GET"]),
]


def bearer(principal: auth.Principal) -> dict[str, str]:
    token = auth.mint(SECRET, sub=principal.sub, roles=principal.roles, ttl_s=60)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(store: SqliteStore, clock: Clock) -> Iterator[TestClient]:
    ctx = make_context(store, clock, task_create=2, default=5)
    with TestClient(create_app(ROUTES, ctx), raise_server_exceptions=False) as test_client:
        yield test_client


def rate_headers(response: httpx.Response) -> dict[str, str]:
    names = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
    return {name: response.headers[name] for name in names if name in response.headers}


def test_wrapper_adds_headers_to_success_and_error_responses(client: TestClient) -> None:
    ok = client.post("/api/task", headers=bearer(ALICE))
    not_found = client.get("/api/task/task_x", headers=bearer(ALICE))
    crashed = client.get("/api/servers", headers=bearer(ALICE))

    assert ok.status_code == 200
    assert rate_headers(ok) == {
        "x-ratelimit-limit": "2",
        "x-ratelimit-remaining": "1",
        "x-ratelimit-reset": str(RESET_S),
    }
    assert not_found.status_code == 404
    assert rate_headers(not_found)["x-ratelimit-remaining"] == "4"
    assert crashed.status_code == 500
    assert rate_headers(crashed)["x-ratelimit-remaining"] == "3"


def test_wrapper_refuses_over_the_limit_before_the_endpoint_runs(client: TestClient) -> None:
    for _ in range(2):
        assert client.post("/api/task", headers=bearer(ALICE)).status_code == 200

    refused = client.post("/api/task", headers=bearer(ALICE))

    assert refused.status_code == 429
    assert refused.json() == {
        "error": "Too many requests",
        "details": "Rate limit of 2 requests per minute exceeded for task creation; retry after 75 s",
    }
    assert refused.headers["retry-after"] == "75"
    assert rate_headers(refused) == {
        "x-ratelimit-limit": "2",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(RESET_S),
    }


def test_invalid_token_is_401_without_headers_and_not_counted(client: TestClient) -> None:
    for _ in range(5):
        refused = client.post("/api/task", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
        assert rate_headers(refused) == {}
    assert client.post("/api/task", headers=bearer(ALICE)).headers["x-ratelimit-remaining"] == "1"


def test_unavailable_store_is_503_not_a_free_pass(tmp_path: Path, clock: Clock) -> None:
    store = UnavailableStore(str(tmp_path / "down"))
    app = create_app(ROUTES, make_context(store, clock))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        refused = test_client.post("/api/task", headers=bearer(ALICE))
    store.close()
    assert refused.status_code == 503
    assert refused.json()["error"] == "Service unavailable"
    assert rate_headers(refused) == {}

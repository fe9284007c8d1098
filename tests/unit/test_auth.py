"""Tokens: HS256 only, exp required, roles checked; who may see and change what."""

from __future__ import annotations

import base64
import datetime
import json
import time
from types import SimpleNamespace

import jwt
import msgspec
import pytest

from core.domain import auth
from core.domain.models import Endpoints, Server, Task, TaskStatus
from core.errors import ConflictError, ForbiddenError, NotFoundError, UnauthorizedError

SECRET = "unit-test-secret-" * 4


def bearer(token: str) -> str:
    return f"Bearer {token}"


def make_task(**overrides: object) -> Task:
    fields: dict[str, object] = dict(
        id="task_1", owner="alice", type="t", priority=1, payload={}, created_at=1, updated_at=1, queued_at=1
    )
    fields.update(overrides)
    return Task(**fields)  # type: ignore[arg-type]


def test_minted_token_verifies_with_its_claims() -> None:
    token = auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=60)
    principal = auth.verify(SECRET, bearer(token))
    assert principal.sub == "alice"
    assert principal.roles == frozenset({"user"})
    assert not principal.is_admin


@pytest.mark.parametrize(
    ("header", "details"),
    [
        (None, "Missing bearer token"),
        ("", "Missing bearer token"),
        ("Basic abc", "Authorization header must be 'Bearer <token>'"),
        ("Bearer ", "Authorization header must be 'Bearer <token>'"),
        ("Bearer not-a-jwt", "Invalid or expired token"),
    ],
)
def test_malformed_headers_are_unauthorized(header: str | None, details: str) -> None:
    with pytest.raises(UnauthorizedError) as caught:
        auth.verify(SECRET, header)
    assert caught.value.details == details


def test_wrong_secret_is_unauthorized() -> None:
    token = auth.mint("another-secret-another-secret-0123456", sub="a", roles=["user"], ttl_s=60)
    with pytest.raises(UnauthorizedError):
        auth.verify(SECRET, bearer(token))


class FrozenTime:
    """The wall clock both the token cache (time.time) and PyJWT (datetime.now) read, moved
    by hand."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def time(self) -> float:
        return self.now_s

    def datetime(self) -> type[datetime.datetime]:
        clock = self

        class Frozen(datetime.datetime):
            @classmethod
            def now(cls, tz: datetime.tzinfo | None = None) -> Frozen:
                return cls.fromtimestamp(clock.now_s, tz)

        return Frozen


def test_a_cached_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verified tokens are cached; the cache rechecks the time claims at every use."""
    clock = FrozenTime(1_700_000_000.0)
    monkeypatch.setattr(auth, "time", SimpleNamespace(time=clock.time))  # auth's clock only
    monkeypatch.setattr(jwt.api_jwt, "datetime", clock.datetime())
    token = auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=60, now_s=int(clock.now_s))
    assert auth.verify(SECRET, bearer(token)).sub == "alice"
    clock.now_s += 59.9
    assert auth.verify(SECRET, bearer(token)).sub == "alice"  # from the cache
    clock.now_s += 0.1  # exp is exclusive: expired at exactly iat + ttl
    with pytest.raises(UnauthorizedError, match="expired"):
        auth.verify(SECRET, bearer(token))


def test_a_cached_token_is_not_valid_under_another_secret() -> None:
    token = auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=60)
    auth.verify(SECRET, bearer(token))
    with pytest.raises(UnauthorizedError):
        auth.verify("another-secret-" * 4, bearer(token))


def test_a_tampered_copy_of_a_cached_token_is_unauthorized() -> None:
    token = auth.mint(SECRET, sub="alice", roles=["user"], ttl_s=60)
    auth.verify(SECRET, bearer(token))
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(UnauthorizedError):
        auth.verify(SECRET, bearer(f"{header}.{forged}.{signature}"))


def test_the_token_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "VERIFIED_CACHE_SIZE", 20)
    tokens = [auth.mint(SECRET, sub=f"u{i}", roles=["user"], ttl_s=60) for i in range(30)]
    for token in tokens:
        auth.verify(SECRET, bearer(token))
    assert len(auth._verified) <= 20
    assert auth.verify(SECRET, bearer(tokens[0])).sub == "u0"  # dropped, verified again


def test_expired_token_is_unauthorized() -> None:
    token = auth.mint(SECRET, sub="a", roles=["user"], ttl_s=60, now_s=time.time() - 120)
    with pytest.raises(UnauthorizedError, match="expired"):
        auth.verify(SECRET, bearer(token))


def test_token_without_exp_is_unauthorized() -> None:
    token = jwt.encode({"sub": "a", "roles": ["admin"]}, SECRET, algorithm="HS256")
    with pytest.raises(UnauthorizedError, match="exp"):
        auth.verify(SECRET, bearer(token))


def test_not_before_in_the_future_is_unauthorized() -> None:
    now = int(time.time())
    token = jwt.encode({"sub": "a", "roles": ["user"], "exp": now + 600, "nbf": now + 300}, SECRET, "HS256")
    with pytest.raises(UnauthorizedError, match="not yet valid"):
        auth.verify(SECRET, bearer(token))


def _segment(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_rejected() -> None:
    claims = {"sub": "root", "roles": ["admin"], "exp": int(time.time()) + 600}
    token = f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims)}."
    with pytest.raises(UnauthorizedError):
        auth.verify(SECRET, bearer(token))


def test_other_hmac_algorithms_are_rejected() -> None:
    claims = {"sub": "root", "roles": ["admin"], "exp": int(time.time()) + 600}
    token = jwt.encode(claims, SECRET, algorithm="HS512")
    with pytest.raises(UnauthorizedError):
        auth.verify(SECRET, bearer(token))


@pytest.mark.parametrize("roles", [[], ["root"], "admin", None])
def test_roles_must_be_a_list_of_known_roles(roles: object) -> None:
    claims = {"sub": "a", "roles": roles, "exp": int(time.time()) + 600}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(UnauthorizedError, match="roles"):
        auth.verify(SECRET, bearer(token))


def test_service_token_needs_a_server_id() -> None:
    token = jwt.encode({"sub": "s", "roles": ["service"], "exp": int(time.time()) + 60}, SECRET, "HS256")
    with pytest.raises(UnauthorizedError, match="server_id"):
        auth.verify(SECRET, bearer(token))


def test_mint_refuses_unknown_roles_and_empty_secret() -> None:
    with pytest.raises(ValueError, match="unknown roles"):
        auth.mint(SECRET, sub="a", roles=["root"], ttl_s=60)
    with pytest.raises(ValueError, match="empty"):
        auth.mint("", sub="a", roles=["user"], ttl_s=60)


def test_another_users_task_is_not_found() -> None:
    task = make_task(owner="alice")
    bob = auth.Principal(sub="bob", roles=frozenset({"user"}))
    with pytest.raises(NotFoundError, match="Task not found: task_1"):
        auth.visible_task(bob, task, task.id)
    admin = auth.Principal(sub="root", roles=frozenset({"admin"}))
    assert auth.visible_task(admin, task, task.id) is task


def test_callback_rules() -> None:
    task = make_task(status=TaskStatus.PROCESSING, server_id="s1", attempts=2)
    own = auth.Principal(sub="server:s1", roles=frozenset({"service"}), server_id="s1")
    scoped = auth.Principal(
        sub="x", roles=frozenset({"service"}), server_id="s1", task_id="task_1", attempt=2
    )
    auth.check_callback(own, task)
    auth.check_callback(scoped, task)
    stale = auth.Principal(sub="x", roles=frozenset({"service"}), server_id="s1", task_id="task_1", attempt=1)
    with pytest.raises(ConflictError, match="attempt 1"):
        auth.check_callback(stale, task)
    other = auth.Principal(sub="server:s2", roles=frozenset({"service"}), server_id="s2")
    with pytest.raises(NotFoundError):
        auth.check_callback(other, task)
    owner = auth.Principal(sub="alice", roles=frozenset({"user"}))
    with pytest.raises(ForbiddenError):
        auth.check_callback(owner, task)
    stranger = auth.Principal(sub="bob", roles=frozenset({"user"}))
    with pytest.raises(NotFoundError):
        auth.check_callback(stranger, task)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("42", 42)]
)
def test_parse_ttl(text: str, seconds: int) -> None:
    assert auth.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1y", "-5m", "0"])
def test_parse_ttl_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        auth.parse_ttl(text)


@pytest.mark.parametrize("roles", [[["admin"]], [{"admin": True}], [1], ["admin", None]])
def test_roles_that_are_not_strings_are_a_401_not_a_crash(roles: object) -> None:
    token = jwt.encode({"sub": "s", "roles": roles, "exp": int(time.time()) + 60}, SECRET, "HS256")
    with pytest.raises(UnauthorizedError, match="roles"):
        auth.verify(SECRET, bearer(token))


def test_a_callback_token_reads_only_its_own_task() -> None:
    mine = make_task(status=TaskStatus.PROCESSING, server_id="s1", attempts=1)
    neighbour = msgspec.structs.replace(mine, id="task_2")
    callback = auth.Principal(
        sub="x", roles=frozenset({"service"}), server_id="s1", task_id=mine.id, attempt=1
    )
    assert auth.visible_task(callback, mine, mine.id) is mine
    with pytest.raises(NotFoundError):
        auth.visible_task(callback, neighbour, neighbour.id)
    # The server's own token still reads every task running on it.
    own = auth.Principal(sub="server:s1", roles=frozenset({"service"}), server_id="s1")
    assert auth.visible_task(own, neighbour, neighbour.id) is neighbour


def test_a_service_token_is_bound_to_its_registration() -> None:
    token = auth.mint(SECRET, sub="server:s1", roles=["service"], ttl_s=60, server_id="s1", tid="gen-2")
    principal = auth.verify(SECRET, bearer(token))
    assert principal.token_id == "gen-2" and principal.is_server_token
    server = Server(
        id="s1", name="s1", endpoints=Endpoints(predict="http://a/p", health="http://a/h"), registered_at=0
    )
    assert not auth.is_current_registration(principal, msgspec.structs.replace(server, token_id="gen-1"))
    assert not auth.is_current_registration(principal, None)
    assert auth.is_current_registration(principal, msgspec.structs.replace(server, token_id="gen-2"))
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.check_server_access(principal, msgspec.structs.replace(server, token_id="gen-3"))
    # A token from before tokens carried an id matches only a server registered before, too.
    legacy = auth.Principal(sub="server:s1", roles=frozenset({"service"}), server_id="s1")
    assert auth.is_current_registration(legacy, server)
    assert not auth.is_current_registration(legacy, msgspec.structs.replace(server, token_id="gen-1"))

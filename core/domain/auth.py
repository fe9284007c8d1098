"""Who is calling and what they may do: HS256 JWTs with roles admin, user and service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jwt

from core.domain.models import Server, Task
from core.errors import ConflictError, ForbiddenError, NotFoundError, UnauthorizedError

ADMIN, USER, SERVICE = "admin", "user", "service"
ROLES = frozenset({ADMIN, USER, SERVICE})
# Every token carries an expiry; verification refuses anything else than HS256.
_DECODE_OPTIONS: jwt.types.Options = {"require": ["exp", "sub"], "verify_aud": False}


@dataclass(frozen=True)
class Principal:
    sub: str
    roles: frozenset[str]
    # service tokens: the server they speak for; callback tokens also pin task and attempt.
    server_id: str | None = None
    task_id: str | None = None
    attempt: int | None = None
    # A server's own service token: the registration it was issued for (`Server.token_id`).
    token_id: str | None = None
    # The token's `exp` (epoch seconds): a WebSocket opened with it closes then.
    expires_s: int | None = None

    @property
    def is_server_token(self) -> bool:
        """A service token for a registration (not a task's callback token)."""
        return self.is_service and self.task_id is None

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def is_service(self) -> bool:
        return SERVICE in self.roles and not self.is_admin

    @property
    def rate_key(self) -> str:
        return self.sub


def mint(
    secret: str,
    *,
    sub: str,
    roles: Iterable[str],
    ttl_s: int,
    now_s: float | None = None,
    **claims: Any,
) -> str:
    roles = sorted(set(roles))
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    if not secret:
        raise ValueError("JWT_SECRET is empty")
    issued = int(time.time() if now_s is None else now_s)
    body = {"sub": sub, "roles": roles, "iat": issued, "exp": issued + ttl_s}
    body.update({k: v for k, v in claims.items() if v is not None})
    return jwt.encode(body, secret, algorithm="HS256")


class _Verified(NamedTuple):
    principal: Principal
    valid_from_s: int  # the later of iat and nbf
    expires_s: int


# Tokens whose signature and claims were verified, by (secret, token): a client sends the same
# token on every request, and HS256 verification is about a tenth of a request's CPU. A hit
# still checks the time claims against the clock, as PyJWT would; a new secret misses.
_verified: dict[tuple[str, str], _Verified] = {}
_verified_lock = threading.Lock()
VERIFIED_CACHE_SIZE = 4096


def verify(secret: str, header: str | None) -> Principal:
    """The principal behind an `Authorization: Bearer ...` header, or UnauthorizedError."""
    if not header:
        raise UnauthorizedError("Missing bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Authorization header must be 'Bearer <token>'")
    token = token.strip()
    known = _verified.get((secret, token))
    if known is not None and known.valid_from_s <= time.time() < known.expires_s:
        return known.principal
    principal, claims = _decode(secret, token)
    verified = _Verified(
        principal, max(int(claims.get("iat", 0)), int(claims.get("nbf", 0))), int(claims["exp"])
    )
    with _verified_lock:
        while _verified and len(_verified) >= VERIFIED_CACHE_SIZE:
            del _verified[next(iter(_verified))]  # the oldest entry
        _verified[(secret, token)] = verified
    return principal


def _decode(secret: str, token: str) -> tuple[Principal, dict[str, Any]]:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options=_DECODE_OPTIONS)
    except jwt.ExpiredSignatureError:
        raise UnauthorizedError("Token expired") from None
    except jwt.ImmatureSignatureError:
        raise UnauthorizedError("Token not yet valid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise UnauthorizedError(f"Token is missing the '{exc.claim}' claim") from None
    except jwt.InvalidTokenError:
        raise UnauthorizedError("Invalid or expired token") from None
    sub, roles = claims.get("sub"), claims.get("roles")
    if not isinstance(sub, str) or not sub:
        raise UnauthorizedError("Token 'sub' must be a non-empty string")
    if (
        not isinstance(roles, list)
        or not roles
        or not all(isinstance(role, str) for role in roles)  # [["admin"]] is not a role list
        or not set(roles) <= ROLES
    ):
        raise UnauthorizedError("Token 'roles' must be a list of admin, user, service")
    server_id, task_id, attempt, token_id = (
        claims.get("server_id"),
        claims.get("task_id"),
        claims.get("attempt"),
        claims.get("tid"),
    )
    if SERVICE in roles and not isinstance(server_id, str):
        raise UnauthorizedError("Service token has no 'server_id' claim")
    principal = Principal(
        sub=sub,
        roles=frozenset(roles),
        server_id=server_id if isinstance(server_id, str) else None,
        task_id=task_id if isinstance(task_id, str) else None,
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        token_id=token_id if isinstance(token_id, str) else None,
        expires_s=int(claims["exp"]),
    )
    return principal, claims


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ForbiddenError("Admin role required")


def require_any(principal: Principal, *roles: str) -> None:
    if not principal.roles & set(roles):
        raise ForbiddenError(f"Requires role: {' or '.join(roles)}")


def can_read_task(principal: Principal, task: Task) -> bool:
    if principal.is_admin:
        return True
    if USER in principal.roles and task.owner == principal.sub:
        return True
    if principal.task_id is not None and principal.task_id != task.id:
        return False  # a callback token reads its own task only, as it writes only that one
    return principal.is_service and principal.server_id == task.server_id


def visible_task(principal: Principal, task: Task | None, task_id: str) -> Task:
    """The task if the principal may see it; otherwise 404, so existence does not leak."""
    if task is None or not can_read_task(principal, task):
        raise NotFoundError(f"Task not found: {task_id}")
    return task


def followed_task(principal: Principal, task: Task | None, task_id: str) -> Task:
    """The task if the principal may follow its updates (owner or admin; a backend reads a
    task through its callback, not a subscription); otherwise 404, as for GET."""
    if task is None or not (principal.is_admin or (USER in principal.roles and task.owner == principal.sub)):
        raise NotFoundError(f"Task not found: {task_id}")
    return task


def owned_task(principal: Principal, task: Task | None, task_id: str) -> Task:
    """The task if the principal may retry or cancel it (owner or admin), else 404 / 403."""
    task = visible_task(principal, task, task_id)
    if not principal.is_admin and task.owner != principal.sub:
        raise ForbiddenError("Only the task's owner or an admin may do this")
    return task


def check_callback(principal: Principal, task: Task) -> None:
    """A backend may report only on a task assigned to its server, for the current attempt.

    A callback token names its task, so a late callback (an earlier attempt, or a server the
    task has since left) is a 409; anyone else who may not report gets 404 or 403.
    """
    if principal.is_admin:
        return
    if principal.is_service and principal.task_id == task.id:
        if principal.server_id != task.server_id or (
            principal.attempt is not None and principal.attempt != task.attempts
        ):
            raise ConflictError(
                f"Callback is for attempt {principal.attempt} on {principal.server_id}; the task"
                f" is now on attempt {task.attempts} ({task.status.value})"
            )
        return
    if principal.is_service and principal.task_id is None and principal.server_id == task.server_id:
        return
    if principal.is_service or not can_read_task(principal, task):
        raise NotFoundError(f"Task not found: {task.id}")
    raise ForbiddenError("Only the backend running the task (service role) or an admin may update it")


def check_server_access(principal: Principal, server: Server) -> None:
    """Heartbeats: admin, or the server's own service token (not a task callback token)."""
    if principal.is_admin:
        return
    if principal.is_server_token and principal.server_id == server.id:
        if not is_current_registration(principal, server):
            raise UnauthorizedError(REVOKED)
        return
    raise ForbiddenError("Token is not for this server")


REVOKED = "Service token revoked: the server was removed, registered again or its token rotated"


def is_current_registration(principal: Principal, server: Server | None) -> bool:
    """A server's service token is valid only for the registration it was issued with."""
    return (
        server is not None
        and server.id == principal.server_id
        and server.token_id == (principal.token_id or "")
    )


def parse_ttl(text: str) -> int:
    """'90s', '15m', '1h', '7d' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        value = int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)
    except ValueError:
        raise ValueError(f"invalid TTL {text!r}: use e.g. 90s, 15m, 1h, 7d") from None
    if value <= 0:
        raise ValueError("TTL must be positive")
    return value

"""Settings, read once from the environment (durations in milliseconds, as in the API).

Every knob is listed in the README's configuration table."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _networks(env: Mapping[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A comma- or space-separated CIDR list."""
    networks = []
    for item in filter(None, re.split(r"[\s,]+", env.get(name, "").strip())):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return tuple(networks)


@dataclass(frozen=True)
class RateLimits:
    """Requests per minute per principal; 0 turns a limit off."""

    default: int = 100
    task_create: int = 50
    server_register: int = 10
    service: int = 1000


@dataclass(frozen=True)
class OutlierPolicy:
    """Passive outlier detection (core/domain/outlier.py); durations in milliseconds."""

    # Failed attempts in a row that eject a server; 0 turns outlier detection off.
    consecutive_failures: int = 3
    base_ejection_ms: int = 30_000
    max_ejection_ms: int = 300_000
    # At most this share of the fleet is ejected at once (always at least one server).
    max_ejection_percent: int = 50
    # A returning server's share of slots grows from one slot to all over this window; 0 is off.
    slow_start_ms: int = 30_000

    @property
    def enabled(self) -> bool:
        return self.consecutive_failures > 0


@dataclass(frozen=True)
class Config:
    jwt_secret: str = ""
    max_attempts: int = 3
    queue_timeout_ms: int = HOUR_MS
    task_timeout_ms: int = HOUR_MS
    heartbeat_timeout_ms: int = 90_000
    task_ttl_days: int = 7
    # `async: false` waits this long (SYNC_WAIT_S); `Prefer: wait=N` up to SYNC_WAIT_MAX.
    sync_wait_ms: int = 25_000
    sync_wait_max_ms: int = 60_000
    # Streamed output: one chunk's `data` (JSON-encoded), all of a task's, and how many chunks.
    output_chunk_max_bytes: int = 64 * 1024
    output_task_max_bytes: int = 4 * 1024 * 1024
    output_task_max_chunks: int = 10_000
    # A stream response that cannot stay open (AWS: Lambda answers in one piece) carries what
    # arrives within this long; the client reconnects with Last-Event-ID.
    stream_wait_ms: int = 20_000
    max_body_bytes: int = 256 * 1024
    sweep_interval_ms: int = 5_000
    health_check_interval_ms: int = 30_000
    # Backoff after a failed attempt: base * 2^(attempt-1), capped, with jitter.
    retry_base_ms: int = 500
    retry_max_ms: int = 30_000
    # When every capable server answered busy, look again after this long.
    busy_retry_ms: int = 1_000
    # Reconciliation leaves a server alone for this long after a claim on it.
    reconcile_grace_ms: int = 10_000
    # Tasks one owner (token `sub`) may have in flight on the whole fleet; 0 is no limit.
    max_in_flight_per_owner: int = 0
    # How long a dispatcher may use its view of the fleet before reading it again.
    fleet_cache_ms: int = 1_000
    health_check_timeout_ms: int = 5_000
    rate_limits: RateLimits = field(default_factory=RateLimits)
    outlier: OutlierPolicy = field(default_factory=OutlierPolicy)
    # Where backends send callbacks: the public base URL of this deployment.
    public_url: str = "http://127.0.0.1:8787"
    # Webhooks: the signing secret (empty: derived from the JWT secret, see core.domain.signing),
    # attempts per delivery, backoff base * 2^(attempt-1) capped and jittered, and how long a
    # receiver may take to answer.
    webhook_secret: str = ""
    webhook_max_attempts: int = 6
    webhook_retry_base_ms: int = 5_000
    webhook_retry_max_ms: int = HOUR_MS
    webhook_timeout_ms: int = 10_000
    # Webhooks go to public addresses only, and to these networks (WEBHOOK_ALLOWED_NETWORKS);
    # `taskgate dev` adds loopback. Backends may be private; metadata addresses never.
    webhook_allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **overrides: object) -> Config:
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "jwt_secret": env.get("JWT_SECRET", ""),
            "max_attempts": _int(env, "MAX_ATTEMPTS", 3),
            "queue_timeout_ms": _int(env, "QUEUE_TIMEOUT", HOUR_MS),
            "task_timeout_ms": _int(env, "TASK_TIMEOUT", HOUR_MS),
            "heartbeat_timeout_ms": _int(env, "HEARTBEAT_TIMEOUT", 90_000),
            "task_ttl_days": _int(env, "TASK_TTL_DAYS", 7),
            # SYNC_WAIT_S (seconds, the name) or SYNC_WAIT (ms, like every other duration).
            "sync_wait_ms": (
                _int(env, "SYNC_WAIT_S", 25) * 1000
                if env.get("SYNC_WAIT_S")
                else _int(env, "SYNC_WAIT", 25_000)
            ),
            "sync_wait_max_ms": _int(env, "SYNC_WAIT_MAX", 60) * 1000,
            "output_chunk_max_bytes": _int(env, "OUTPUT_CHUNK_MAX_BYTES", 64 * 1024),
            "output_task_max_bytes": _int(env, "OUTPUT_TASK_MAX_BYTES", 4 * 1024 * 1024),
            "output_task_max_chunks": _int(env, "OUTPUT_TASK_MAX_CHUNKS", 10_000),
            "stream_wait_ms": _int(env, "STREAM_WAIT_S", 20) * 1000,
            "sweep_interval_ms": _int(env, "SWEEP_INTERVAL", 5_000),
            "health_check_interval_ms": _int(env, "HEALTH_CHECK_INTERVAL", 30_000),
            "retry_base_ms": _int(env, "RETRY_BASE_DELAY", 500),
            "retry_max_ms": _int(env, "RETRY_MAX_DELAY", 30_000),
            "busy_retry_ms": _int(env, "BUSY_RETRY_DELAY", 1_000),
            "reconcile_grace_ms": _int(env, "RECONCILE_GRACE", 10_000),
            "fleet_cache_ms": _int(env, "FLEET_CACHE", 1_000),
            "max_in_flight_per_owner": _int(env, "MAX_IN_FLIGHT_PER_OWNER", 0),
            "health_check_timeout_ms": _int(env, "HEALTH_CHECK_TIMEOUT", 5_000),
            "rate_limits": RateLimits(
                default=_int(env, "RATE_LIMIT_DEFAULT", 100),
                task_create=_int(env, "RATE_LIMIT_TASK_CREATE", 50),
                server_register=_int(env, "RATE_LIMIT_SERVER_REGISTER", 10),
                service=_int(env, "RATE_LIMIT_SERVICE", 1000),
            ),
            "outlier": OutlierPolicy(
                consecutive_failures=_int(env, "OUTLIER_CONSECUTIVE_FAILURES", 3),
                base_ejection_ms=_int(env, "OUTLIER_BASE_EJECTION", 30_000),
                max_ejection_ms=_int(env, "OUTLIER_MAX_EJECTION", 300_000),
                max_ejection_percent=_int(env, "OUTLIER_MAX_EJECTION_PERCENT", 50),
                slow_start_ms=_int(env, "SLOW_START_WINDOW", 30_000),
            ),
            "webhook_secret": env.get("WEBHOOK_SECRET", ""),
            "webhook_max_attempts": _int(env, "WEBHOOK_MAX_ATTEMPTS", 6),
            "webhook_retry_base_ms": _int(env, "WEBHOOK_RETRY_BASE_DELAY", 5_000),
            "webhook_retry_max_ms": _int(env, "WEBHOOK_RETRY_MAX_DELAY", HOUR_MS),
            "webhook_timeout_ms": _int(env, "WEBHOOK_TIMEOUT", 10_000),
            "webhook_allowed_networks": _networks(env, "WEBHOOK_ALLOWED_NETWORKS"),
            "public_url": env.get("PUBLIC_URL", "http://127.0.0.1:8787").rstrip("/"),
        }
        values.update(overrides)
        config = cls(**values)  # type: ignore[arg-type]
        if not 1_000 <= config.sync_wait_max_ms <= 60_000:
            raise ValueError("SYNC_WAIT_MAX must be 1-60 (seconds)")
        if not 0 <= config.sync_wait_ms <= 60_000:
            raise ValueError("SYNC_WAIT_S must be 0-60 (seconds)")
        if config.sync_wait_ms > config.sync_wait_max_ms:
            # The deployment's cap holds for every wait of a create, `async: false` included.
            config = dataclasses.replace(config, sync_wait_ms=config.sync_wait_max_ms)
        if (
            min(config.output_chunk_max_bytes, config.output_task_max_bytes, config.output_task_max_chunks)
            < 1
        ):
            raise ValueError("OUTPUT_* limits must be positive")
        if not 1_000 <= config.stream_wait_ms <= 60_000:
            raise ValueError("STREAM_WAIT_S must be 1-60 (seconds)")
        if config.max_attempts < 1:
            raise ValueError("MAX_ATTEMPTS must be at least 1")
        if config.max_in_flight_per_owner < 0:
            raise ValueError("MAX_IN_FLIGHT_PER_OWNER must be 0 (no limit) or more")
        if config.webhook_max_attempts < 1:
            raise ValueError("WEBHOOK_MAX_ATTEMPTS must be at least 1")
        if config.webhook_timeout_ms < 1 or config.webhook_retry_base_ms < 0:
            raise ValueError("WEBHOOK_TIMEOUT must be positive and WEBHOOK_RETRY_BASE_DELAY not negative")
        outlier = config.outlier
        if min(vars(outlier).values()) < 0 or outlier.max_ejection_percent > 100:
            raise ValueError(
                "OUTLIER_* and SLOW_START_WINDOW must not be negative;"
                " OUTLIER_MAX_EJECTION_PERCENT is at most 100"
            )
        if outlier.max_ejection_ms < outlier.base_ejection_ms:
            raise ValueError("OUTLIER_MAX_EJECTION must be at least OUTLIER_BASE_EJECTION")
        for name, value in vars(config.rate_limits).items():
            if value < 0:
                raise ValueError(f"RATE_LIMIT_{name.upper()} must be 0 (off) or more, got {value}")
        return config

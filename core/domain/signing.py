"""Webhook signatures: how taskgate signs what it POSTs, and how a receiver checks it.

Every delivery carries two headers:

    X-Taskgate-Timestamp: <epoch seconds when this attempt was sent>
    X-Taskgate-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>

A receiver recomputes the HMAC over the raw bytes it received (before any JSON parsing),
compares in constant time, and refuses a timestamp more than five minutes from its own clock,
so a captured request cannot be replayed later. `verify` does all of that; receivers in
Python can copy or import it (it needs only the standard library).

The secret is WEBHOOK_SECRET when set (in AWS, optionally the SSM parameter named by
WEBHOOK_SECRET_PARAMETER); otherwise it is derived from the JWT secret, so one machine works
with no extra setting: HMAC-SHA256(JWT secret, "taskgate webhook signing v1"), hex. The
derivation is one-way: the webhook secret, handed to receivers, reveals nothing of the JWT
secret. `taskgate webhook-secret --db taskgate.db` prints it.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Taskgate-Timestamp"
SIGNATURE_HEADER = "X-Taskgate-Signature"
# Names the delivery (`<task id>.<round>`): the same on every attempt, for de-duplication.
DELIVERY_HEADER = "X-Taskgate-Delivery"
TOLERANCE_S = 300
_DERIVATION = b"taskgate webhook signing v1"


def derive_secret(jwt_secret: str) -> str:
    return hmac.new(jwt_secret.encode(), _DERIVATION, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Taskgate-Signature value for a body sent at `timestamp` (epoch seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def signed_headers(
    secret: str, timestamp: int, body: bytes, delivery_id: str | None = None
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "taskgate-webhook/1",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    if delivery_id is not None:
        headers[DELIVERY_HEADER] = delivery_id
    return headers


def verify(
    secret: str,
    timestamp: str | int,
    body: bytes,
    signature: str,
    now: float,
    tolerance_s: int = TOLERANCE_S,
) -> bool:
    """True if `signature` (the X-Taskgate-Signature header) signs `body` at `timestamp` (the
    X-Taskgate-Timestamp header) with `secret`, and `timestamp` is within `tolerance_s` of
    `now` (epoch seconds). `body` is the raw request body."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body).encode(), signature.strip().encode())

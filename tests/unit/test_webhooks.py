"""Webhook signatures (core.domain.signing) and the retry decision on an attempt's outcome."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from core.domain.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    derive_secret,
    sign,
    signed_headers,
    verify,
)
from core.services.webhook_delivery import WebhookOutcome

SECRET = "whsec-test"
BODY = b'{"id":"task_1","status":"COMPLETED","result":{"ok":true}}'
SENT = 1_700_000_000


def test_the_signature_is_the_documented_hmac() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, SENT, BODY) == f"v1={expected}"


def test_headers_carry_timestamp_and_signature() -> None:
    headers = signed_headers(SECRET, SENT, BODY)
    assert headers[TIMESTAMP_HEADER] == "1700000000"
    assert verify(SECRET, headers[TIMESTAMP_HEADER], BODY, headers[SIGNATURE_HEADER], now=SENT + 1)


@pytest.mark.parametrize("delay", [0, 299, 300, -300])
def test_a_fresh_signature_verifies(delay: int) -> None:
    assert verify(SECRET, SENT, BODY, sign(SECRET, SENT, BODY), now=SENT + delay)


def test_a_tampered_body_is_refused() -> None:
    signature = sign(SECRET, SENT, BODY)
    assert not verify(SECRET, SENT, BODY.replace(b"true", b"false"), signature, now=SENT)
    assert not verify(SECRET, SENT, BODY + b" ", signature, now=SENT)


def test_another_secret_or_timestamp_is_refused() -> None:
    signature = sign(SECRET, SENT, BODY)
    assert not verify("other", SENT, BODY, signature, now=SENT)
    assert not verify(SECRET, SENT + 1, BODY, signature, now=SENT)


@pytest.mark.parametrize("age", [301, 3600, -301])
def test_a_replay_older_than_five_minutes_is_refused(age: int) -> None:
    assert not verify(SECRET, SENT, BODY, sign(SECRET, SENT, BODY), now=SENT + age)


@pytest.mark.parametrize("signature", ["", "v1=", "v0=abc", "garbage"])
def test_malformed_signatures_are_refused(signature: str) -> None:
    assert not verify(SECRET, SENT, BODY, signature, now=SENT)


@pytest.mark.parametrize("timestamp", ["", "abc", "1.5e9", None])
def test_malformed_timestamps_are_refused(timestamp: object) -> None:
    assert not verify(SECRET, timestamp, BODY, sign(SECRET, SENT, BODY), now=SENT)  # type: ignore[arg-type]


def test_the_derived_secret_is_stable_and_not_the_jwt_secret() -> None:
    assert derive_secret("jwt-secret") == derive_secret("jwt-secret")
    assert derive_secret("jwt-secret") != derive_secret("jwt-secret2")
    assert "jwt-secret" not in derive_secret("jwt-secret")


@pytest.mark.parametrize(
    ("outcome", "delivered", "retryable"),
    [
        (WebhookOutcome(200, None, 5), True, False),
        (WebhookOutcome(204, None, 5), True, False),
        (WebhookOutcome(500, None, 5), False, True),
        (WebhookOutcome(503, None, 5), False, True),
        (WebhookOutcome(429, None, 5), False, True),
        (WebhookOutcome(400, None, 5), False, False),
        (WebhookOutcome(404, None, 5), False, False),
        (WebhookOutcome(301, None, 5), False, False),
        (WebhookOutcome(None, "ConnectionRefusedError", 1), False, True),
        (WebhookOutcome(None, "timed out after 10 s", 10_000), False, True),
        (
            WebhookOutcome(None, "refused: the webhook resolves to a cloud metadata address", 0, final=True),
            False,
            False,
        ),
    ],
)
def test_what_is_retried(outcome: WebhookOutcome, delivered: bool, retryable: bool) -> None:
    assert (outcome.delivered, outcome.retryable) == (delivered, retryable)

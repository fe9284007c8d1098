"""Backend and webhook URLs: http(s), no credentials, never a cloud metadata address."""

from __future__ import annotations

import pytest

from core.domain.urls import check_url
from core.errors import ValidationError


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/predict",
        "https://gpu-1.internal:8443/v1/predict",
        "http://10.0.0.5/health",
        "http://[::1]:9000/p",
        "https://example.com/hook?x=1",
    ],
)
def test_allowed(url: str) -> None:
    assert check_url(url, "endpoints.predict") == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/p", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://x", "only http and https"),
        ("http://user:pass@example.com/p", "credentials"),
        ("http://user@example.com/p", "credentials"),
        ("http:///nohost", "no host"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://169.254.170.2/v2/credentials", "metadata"),
        ("http://[fd00:ec2::254]/latest", "metadata"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://2852039166/", "metadata"),
        ("http://0xa9fea9fe/", "metadata"),
        ("http://0251.0376.0251.0376/", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://METADATA.google.internal./", "metadata"),
        ("http://100.100.100.200/latest", "metadata"),
        ("http://example.com:99999/", "Port out of range"),
    ],
)
def test_refused(url: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as caught:
        check_url(url, "endpoints.health")
    assert "endpoints.health" in caught.value.details


@pytest.mark.parametrize(
    "url",
    [
        "http://169\u3002254\u3002169\u3002254/",
        "http://169\uff0e254\uff0e169\uff0e254/",
        "http://\uff11\uff16\uff19.254.169.254/",
        "http://metadata\uff0egoogle\uff0einternal/",
    ],
)
def test_unicode_spellings_of_metadata_addresses_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="metadata"):
        check_url(url, "webhook")

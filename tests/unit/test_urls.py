"""Backend and webhook URLs: http(s), no credentials, never a cloud metadata address; one strict
parse whose normalised form is what is stored and called; webhooks to public addresses only."""

from __future__ import annotations

import ipaddress

import pytest

from core.config import Config
from core.domain.urls import LOOPBACK_NETWORKS, WebhookPolicy, check_url, check_webhook_url, parse_target
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


# -- finding 1: one parse, the one both HTTP clients would make -------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169%2e254/latest/meta-data/",  # urllib3 percent-decodes the host
        "http://169.254.169.254\\.example.com/",  # urllib3 ends the host at `\`
        "http://example.com\\@169.254.169.254/",
        "http://example.com\t/",
        "http://exa mple.com/",
        "http://example.com:+80/",
        "http://example.com:80:90/",
        "http://[fe80::1%25eth0]/",
        "http://[::1/",
        "http://exam_ple..com/",
        "http://-bad-.example/",
    ],
)
def test_spellings_parsers_disagree_on_are_refused(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_url(url, "endpoints.predict")
    assert "endpoints.predict" in caught.value.details


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("HTTP://Example.COM./p?q=1#frag", "http://example.com/p?q=1"),
        ("http://0x7f.1:8080/p", "http://127.0.0.1:8080/p"),
        ("http://[0:0::1]:9000", "http://[::1]:9000/"),
        ("https://b\u00fccher.example/x", "https://xn--bcher-kva.example/x"),
        ("http://\uff11\uff10.0.0.5/health", "http://10.0.0.5/health"),
    ],
)
def test_the_stored_url_is_the_normalised_one(url: str, normalised: str) -> None:
    assert check_url(url, "endpoints.predict") == normalised
    # Normalising is stable: the stored form parses to itself.
    assert check_url(normalised, "endpoints.predict") == normalised


def test_a_target_keeps_the_original_host_for_host_and_tls() -> None:
    target = parse_target("https://gpu.example:8443/v1/predict?k=1", "endpoints.predict")
    assert (target.host, target.port, target.path) == ("gpu.example", 8443, "/v1/predict?k=1")
    assert target.host_header == "gpu.example:8443"
    assert target.url_at("203.0.113.7") == "https://203.0.113.7:8443/v1/predict?k=1"
    assert target.url_at("2001:db8::7") == "https://[2001:db8::7]:8443/v1/predict?k=1"
    assert parse_target("http://gpu.example/", "x").host_header == "gpu.example"


# -- finding 2: webhooks go to public addresses only --------------------------------------------

PUBLIC = WebhookPolicy()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",  # CGNAT
        "100.127.255.254",
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "0.0.0.0",
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "198.18.0.1",  # benchmarking
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",  # site-local
        "ff02::1",
        "::ffff:10.0.0.1",  # IPv4-mapped
        "::ffff:8.8.8.8",
        "::10.0.0.1",  # IPv4-compatible
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::808:808",  # NAT64 of a public address: still a way into IPv4 networks
        "64:ff9b:1::a00:1",
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2001::1",  # Teredo
        "2001:db8::1",
    ],
)
def test_webhooks_refuse_non_public_addresses(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert PUBLIC.refusal(ip) is not None
    with pytest.raises(ValidationError, match="not allowed for webhooks"):
        check_webhook_url(f"http://{parse_target_host(address)}/hook", "webhook", PUBLIC)


def parse_target_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:2800:220:1::1", "2a00:1450::1"])
def test_webhooks_accept_public_addresses(address: str) -> None:
    assert PUBLIC.refusal(ipaddress.ip_address(address)) is None
    url = f"https://{parse_target_host(address)}/hook"
    assert check_webhook_url(url, "webhook", PUBLIC) == url


def test_the_operator_allows_networks_but_never_metadata() -> None:
    policy = WebhookPolicy((ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("169.254.0.0/16")))
    assert policy.refusal(ipaddress.ip_address("10.9.8.7")) is None
    assert policy.refusal(ipaddress.ip_address("192.168.1.1")) is not None
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) == "a cloud metadata address"
    assert check_webhook_url("http://10.9.8.7:8080/h", "webhook", policy) == "http://10.9.8.7:8080/h"


def test_localhost_names_are_refused_unless_loopback_is_allowed() -> None:
    for url in ("http://localhost:9/x", "http://api.localhost/x", "http://LOCALHOST./x"):
        with pytest.raises(ValidationError, match="loopback"):
            check_webhook_url(url, "webhook", PUBLIC)
    dev = WebhookPolicy(LOOPBACK_NETWORKS)
    assert dev.allows_loopback() and not PUBLIC.allows_loopback()
    assert check_webhook_url("http://localhost:9/x", "webhook", dev) == "http://localhost:9/x"


def test_the_allowed_networks_setting_is_parsed_and_checked() -> None:
    config = Config.from_env({"WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8, 192.168.1.0/24 fd00::/8"})
    assert [str(n) for n in config.webhook_allowed_networks] == ["10.0.0.0/8", "192.168.1.0/24", "fd00::/8"]
    assert Config.from_env({}).webhook_allowed_networks == ()
    with pytest.raises(ValueError, match="WEBHOOK_ALLOWED_NETWORKS"):
        Config.from_env({"WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/33"})

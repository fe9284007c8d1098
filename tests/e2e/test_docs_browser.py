"""/docs in a real browser: Debian's headless Chromium loads the page from a running
`taskgate serve`, runs Swagger UI from the assets taskgate serves itself (no CDN: this machine
has no internet), fetches /openapi.json and renders every operation.

Chromium comes from Debian (`apt-get install chromium`; .ci/run installs it). Without it this
test fails rather than skips: a docs page nobody rendered is not a tested docs page.
"""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .browser import CHROMIUM, HEADLESS
from .harness import serve

# Time for the page's scripts and its fetch of /openapi.json; virtual, so no slower a run.
FLAGS = [*HEADLESS, "--virtual-time-budget=10000"]
TAGS = ("Tasks", "Servers", "Statistics", "Load Balancer", "System")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for api in serve(tmp_path_factory.mktemp("docs")):
        yield str(api.client.base_url).rstrip("/")


def chromium(tmp: Path, *args: str) -> str:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`), as .ci/run does"
        )
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    done = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"chromium exited with {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def documented(base: str) -> set[tuple[str, str]]:
    spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
    return {(method, path) for path, item in spec["paths"].items() for method in item}


def test_the_page_is_served_with_no_outside_address(base: str) -> None:
    page = httpx.get(f"{base}/docs", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "://" not in page.text, "the page must load nothing from another host"
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        reply = httpx.get(f"{base}/{asset}", timeout=10)
        assert reply.status_code == 200 and len(reply.content) > (
            100 if asset.endswith("init.js") else 500
        ), asset


def test_the_page_runs_under_a_content_security_policy_and_keeps_no_token(base: str) -> None:
    """Security review, finding 5: /docs had no CSP, and Swagger UI kept a pasted token in
    localStorage (persistAuthorization). The rendering tests below run under this policy."""
    page = httpx.get(f"{base}/docs", timeout=10)
    policy = dict(
        part.strip().split(" ", 1)
        for part in page.headers["content-security-policy"].split(";")
        if part.strip()
    )
    assert policy["script-src"] == "'self'" and policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), "an inline script would be blocked"
    init = httpx.get(f"{base}/docs/assets/init.js", timeout=10)
    assert init.headers["content-type"].startswith("text/javascript")
    assert "persistAuthorization: false" in init.text and "localStorage" not in init.text


def test_swagger_ui_renders_every_documented_operation(base: str, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", f"{base}/docs")
    assert "Failed to load API definition" not in dom and "Unable to render" not in dom, dom[-2000:]
    rendered = {
        (method, path)
        for method, path in re.findall(r'class="opblock opblock-(\w+)[^"]*".*?data-path="([^"]+)"', dom, re.S)
    }
    assert rendered == documented(base)
    assert {("post", "/api/task"), ("get", "/api/servers"), ("get", "/health")} <= rendered
    for tag in TAGS:
        assert f'data-tag="{tag}"' in dom, tag
    assert "Authorize" in dom  # the bearerAuth scheme


def test_an_operation_opens_with_the_references_example(base: str, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", f"{base}/docs#/Tasks/create_task")
    opened = re.search(r'class="opblock opblock-post is-open" id="operations-Tasks-create_task"', dom)
    assert opened, "the deep link did not open POST /api/task"
    assert "video-processing" in dom  # the request example, from the reference


def test_a_screenshot_shows_the_page(base: str, tmp_path: Path) -> None:
    shot = tmp_path / "docs.png"
    chromium(tmp_path, "--window-size=1280,900", f"--screenshot={shot}", f"{base}/docs")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 900)
    pixels = zlib.decompress(b"".join(_chunks(data, b"IDAT")))
    # A blank or single-colour page compresses to almost nothing and has few distinct bytes.
    assert len(data) > 20_000 and len(set(pixels)) > 64, (len(data), len(set(pixels)))


def _chunks(png: bytes, kind: bytes) -> Iterator[bytes]:
    at = 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        if png[at + 4 : at + 8] == kind:
            yield png[at + 8 : at + 8 + length]
        at += 12 + length

"""The dashboard within the default rate limits, in headless Chromium against `taskgate serve`
with RATE_LIMIT_DEFAULT=100 (the default).

Minutes of a page left open are compressed with a fake clock: a script run before the page's
own speeds up its timers and `Date.now` by FACTOR, so the page lives FACTOR minutes for each
real one, while the gateway counts requests in real 60 s windows. The page's minutes of
requests then land in fewer real windows than they would in real time, which only makes the
budget tighter: if they fit with the user's own calls, they fit when spread out.
The same script records every request the page makes, with its status and Retry-After.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .browser import Browser
from .fleet import Gateway, start_gateway

pytestmark = pytest.mark.timeout(240)

DEFAULT_LIMITS = {
    "RATE_LIMIT_DEFAULT": 100,
    "RATE_LIMIT_TASK_CREATE": 50,
    "RATE_LIMIT_SERVER_REGISTER": 10,
    "RATE_LIMIT_SERVICE": 1000,
}


def fake_clock(factor: int) -> str:
    return f"""(() => {{
  const factor = {factor};
  const realTimeout = window.setTimeout.bind(window);
  window.setTimeout = (run, ms = 0, ...args) => realTimeout(run, ms / factor, ...args);
  const realNow = Date.now.bind(Date);
  const start = realNow();
  Date.now = () => start + (realNow() - start) * factor;
  window.__requests = [];
  const realFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {{
    const entry = {{ url: String(input), at: performance.now(), status: null, retryAfter: null }};
    window.__requests.push(entry);
    const reply = await realFetch(input, init);
    entry.status = reply.status;
    entry.retryAfter = reply.headers.get("Retry-After");
    return reply;
  }};
}})();"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("limits"), spares=0, **DEFAULT_LIMITS) as started:
        yield started


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    opened = Browser(tmp_path / "chromium")
    try:
        yield opened
    finally:
        opened.close()


def open_dashboard(browser: Browser, base: str, token: str, factor: int) -> None:
    browser.before_each_page(fake_clock(factor))
    browser.open(f"{base}/dashboard")
    browser.evaluate(f"sessionStorage.setItem('taskgate.token', {json.dumps(token)})")
    browser.open(f"{base}/dashboard")
    browser.wait_for("!document.getElementById('main').hidden", what="the dashboard")


def page_requests(browser: Browser) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = browser.evaluate("window.__requests.filter((r) => r.url.includes('/api/'))")
    return found


def test_a_page_left_open_for_minutes_leaves_the_token_its_budget(gateway: Gateway, browser: Browser) -> None:
    api = gateway.api
    token = api.token("admin")
    factor = 8
    # WHEN an admin leaves the dashboard open for three of its minutes (22.5 real seconds)
    open_dashboard(browser, gateway.base, token, factor)
    started = time.monotonic()
    remaining: list[int] = []
    # AND meanwhile uses the same token from the API about once a second
    while time.monotonic() - started < 22.5:
        reply = api.get("/api/tasks?limit=1", token=token)
        assert reply.status_code == 200, f"the token's own call was refused: {reply.text}"
        remaining.append(int(reply.headers["x-ratelimit-remaining"]))
        time.sleep(1)  # a person's pace; the page keeps refreshing meanwhile

    # THEN every page request succeeded, one overview per refresh (5 s of page time), and the
    # token never came near its limit
    requests = page_requests(browser)
    assert {r["status"] for r in requests} == {200}, requests
    overviews = [r for r in requests if "/api/overview" in r["url"]]
    assert len(overviews) == len(requests), "the page reads only the overview"
    page_minutes = (time.monotonic() - started) * factor / 60
    assert 8 * page_minutes <= len(overviews) <= 13 * page_minutes, (len(overviews), page_minutes)
    assert min(remaining) >= 10, remaining
    assert browser.evaluate("document.getElementById('limited').hidden") is True
    assert browser.evaluate("document.getElementById('problem').hidden") is True
    assert browser.problems() == []


def test_a_limited_page_shows_one_notice_and_waits_for_retry_after(
    gateway: Gateway, browser: Browser
) -> None:
    api = gateway.api
    token = api.token("admin")
    factor = 20
    # GIVEN the token's budget for this minute used up by its other calls
    while api.get("/api/tasks?limit=1", token=token).status_code != 429:
        pass

    # WHEN the dashboard opens with it
    open_dashboard(browser, gateway.base, token, factor)

    # THEN one notice says so, and no error banner
    browser.wait_for("!document.getElementById('limited').hidden", what="the rate-limit notice")
    notice = browser.evaluate("document.getElementById('limited').innerText")
    assert "rate limit" in notice and "Retry-After" in notice
    assert (
        browser.evaluate(
            "document.querySelectorAll('#main .notice:not([hidden]), #main .error:not([hidden])').length"
        )
        == 1
    )
    # AND it asks again only after each Retry-After (of page time) has passed
    browser.wait_for(
        "window.__requests.filter((r) => r.url.includes('/api/overview') && r.status !== null).length >= 3",
        timeout=60 * 60 / factor + 10,
        what="three overview requests",
    )
    overviews = [r for r in page_requests(browser) if "/api/overview" in r["url"] and r["status"] is not None]
    assert overviews[0]["status"] == 429
    for before, after in itertools.pairwise(overviews):
        if before["status"] == 429:
            waited_ms = after["at"] - before["at"]
            assert waited_ms >= int(before["retryAfter"]) * 1000 / factor - 5, (before, after)
    assert browser.problems() == []

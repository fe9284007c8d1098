"""/dashboard in a real browser (Debian's headless Chromium over CDP) against a live
`taskgate serve` with mock backends working on tasks: the operator pastes a token, sees the
servers, a task's progress bar move, the hourly chart, opens a task with the keyboard, puts a
server in maintenance and changes the algorithm; and the page fits a phone.

Set DASHBOARD_SCREENSHOT=docs/dashboard.png to keep the laptop-size screenshot (the README's).
"""

from __future__ import annotations

import datetime
import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.domain import auth
from tests.support.waiting import eventually

from .browser import Browser
from .fleet import Fleet, Gateway, Mock, start_gateway
from .test_docs_browser import _chunks

pytestmark = pytest.mark.timeout(240)

# Slow tasks report progress every ~0.6 s for ~9 s; quick ones finish at once.
SLOW = Mock(prefix="a-slow", mode="async", delay_ms=9000, progress_steps=14)
QUICK = Mock(prefix="b-quick", mode="sync", delay_ms=20)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("dashboard"), spares=2) as started:
        yield started


@pytest.fixture
def fleet(gateway: Gateway) -> Iterator[Fleet]:
    with Fleet(gateway) as started:
        yield started


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    opened = Browser(tmp_path / "chromium")
    try:
        yield opened
    finally:
        opened.close()


def rows(browser: Browser, table: str) -> list[dict[str, str]]:
    """The table's rows as the page shows them: data attributes and cell texts."""
    return browser.evaluate(
        f"""[...document.querySelectorAll('#{table} tbody tr')].map((tr) => ({{
            ...tr.dataset,
            cells: [...tr.children].map((cell) => cell.innerText.trim()),
            progress: tr.querySelector('[role=progressbar]')?.getAttribute('aria-valuenow'),
        }}))"""
    )


def progress_of(browser: Browser, task_id: str) -> int:
    value = browser.evaluate(
        f"document.querySelector('#tasks tr[data-task-id=\"{task_id}\"] [role=progressbar]')"
        "?.getAttribute('aria-valuenow') ?? '-1'"
    )
    return int(value)


def test_an_operator_watches_and_steers_the_fleet(fleet: Fleet, browser: Browser) -> None:
    api, base = fleet.api, fleet.gateway.base
    # GIVEN a slow backend (async, reports progress) and a quick one, each with its own label
    slow, quick = fleet.start(SLOW, QUICK)
    fleet.register(slow, max_concurrent=4, capabilities=[fleet.capability, "slow"])
    fleet.register(quick, max_concurrent=8, capabilities=[fleet.capability, "quick"])
    # AND tasks done today, one in flight, and one waiting for a capability nobody has
    done = [fleet.submit(capabilities=[fleet.capability, "quick"]) for _ in range(4)]
    fleet.wait_terminal(done)
    running = fleet.submit(priority=5, capabilities=[fleet.capability, "slow"], payload={"clip": "intro.mp4"})
    waiting = fleet.submit(priority=7, capabilities=[fleet.capability, "nobody-has-it"])

    # WHEN the operator opens the page and pastes an admin token into its form, pressing Enter
    browser.viewport(1280, 900)
    browser.open(f"{base}/dashboard")
    browser.wait_for("!document.getElementById('token-form').hidden", what="the token form")
    browser.evaluate("document.getElementById('token-input').focus()")
    browser.type_text(api.admin)
    browser.press("Enter")

    # THEN the token is kept in the tab's sessionStorage, never in the address
    browser.wait_for("!document.getElementById('main').hidden", what="the dashboard")
    assert browser.evaluate("sessionStorage.getItem('taskgate.token')") == api.admin
    assert api.admin not in browser.evaluate("location.href")

    # AND both servers are listed with status, health, load and labels
    browser.wait_for(
        f'document.querySelectorAll(\'#servers tr[data-server-id="{slow.server_id}"],'
        f' #servers tr[data-server-id="{quick.server_id}"]\').length === 2',
        what="both server rows",
    )
    browser.wait_for(
        f"!!document.querySelector('#servers tr[data-server-id=\"{slow.server_id}\"] .load').innerText.includes('1/4')",
        what="the slow server's load bar at 1/4",
    )
    shown = {row["serverId"]: row for row in rows(browser, "servers")}
    slow_row = shown[slow.server_id]
    assert slow_row["status"] == "online" and slow_row["cells"][1] == "online"
    assert slow_row["cells"][2] == "healthy"
    assert slow_row["progress"] == "1" and "slow" in slow_row["cells"][4]
    assert shown[quick.server_id]["cells"][3] == "0/8"

    # AND the running task's progress bar moves while its backend reports
    browser.wait_for(
        f"!!document.querySelector('#tasks tr[data-task-id=\"{running}\"]')", what="the task row"
    )
    first = eventually(lambda: progress_of(browser, running), lambda p: p > 0, timeout=10, what="progress")
    later = eventually(
        lambda: progress_of(browser, running), lambda p: p > first, timeout=10, what="progress moving on"
    )
    assert 0 < first < later <= 100
    # AND a laptop-size screenshot shows it all, the task in flight (the README's)
    shot = browser.screenshot()
    _check_png(shot, width=1280)
    keep = os.environ.get("DASHBOARD_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(shot)
    listed = {row["taskId"]: row for row in rows(browser, "tasks")}
    assert listed[waiting]["status"] == "PENDING" and listed[done[0]]["status"] == "COMPLETED"

    # AND the queue shows the waiting task under its priority, and today's chart has 24 hours
    browser.wait_for("!!document.querySelector('#queue-priorities li[data-priority=\"7\"]')")
    # AND why tasks wait, by capability set
    browser.wait_for(
        "[...document.querySelectorAll('#queue-backlog li')].some(li => li.innerText.startsWith("
        "'1 task needs ') && li.innerText.endsWith('no registered server has `nobody-has-it` (no_capable_server)'))",
        what="the backlog's reasons",
    )
    assert browser.evaluate("document.querySelectorAll('#chart svg g.hour').length") == 24
    created_now = browser.evaluate(
        f"Number(document.querySelector('#chart g.hour[data-hour=\"{_utc_hour()}\"] rect.created')"
        ".getAttribute('height'))"
    )
    assert created_now > 0
    assert browser.evaluate("document.getElementById('stat-success').innerText") == "100.0%"

    # WHEN the operator tabs to a task and opens it with Enter
    browser.evaluate(f"document.querySelector('#tasks tr[data-task-id=\"{running}\"] button').focus()")
    browser.press("Enter")

    # THEN its detail opens with the payload, kept fresh (polled: no /ws on this branch)
    browser.wait_for("document.getElementById('task-detail').open", what="the task's detail")
    payload = browser.evaluate("document.getElementById('detail-payload').innerText")
    assert json.loads(payload) == {"clip": "intro.mp4"}
    browser.wait_for("document.getElementById('detail-live').innerText !== ''", what="live or polling")
    browser.press("Escape")
    browser.wait_for("!document.getElementById('task-detail').open", what="the detail to close")
    # AND opened again, focus is on its Close button, which Enter presses
    browser.evaluate(f"document.querySelector('#tasks tr[data-task-id=\"{waiting}\"] button').focus()")
    browser.press("Enter")
    browser.wait_for("document.activeElement?.id === 'detail-close'", what="focus on Close")
    # (Fleet numbers its payloads: the waiting task was the sixth submitted)
    assert json.loads(browser.evaluate("document.getElementById('detail-payload').innerText")) == {"n": 5}
    # AND it says why it waits
    waiting_line = browser.evaluate("document.getElementById('detail-queue').innerText")
    assert waiting_line == "Waiting (no_capable_server, position 1): no registered server has `nobody-has-it`"
    assert browser.evaluate("document.getElementById('detail-title').innerText") == f"Task {waiting}"
    browser.press("Enter")
    browser.wait_for("!document.getElementById('task-detail').open", what="Close to close it")

    # WHEN the operator puts the quick server in maintenance from its row, with the keyboard
    toggle = f'#servers tr[data-server-id="{quick.server_id}"] button.toggle'
    browser.evaluate(f"document.querySelector('{toggle}').focus()")
    browser.press("Enter")

    # THEN the API has it in maintenance, and the row says so
    eventually(
        lambda: fleet.server(quick.server_id)["status"],
        lambda s: s == "maintenance",
        timeout=10,
        what="maintenance",
    )
    browser.wait_for(
        f"document.querySelector('#servers tr[data-server-id=\"{quick.server_id}\"]').dataset.status === 'maintenance'"
    )
    assert browser.evaluate(f"document.querySelector('{toggle}').getAttribute('aria-pressed')") == "true"
    # AND a quick task now waits: no online server has its label
    held = fleet.submit(capabilities=[fleet.capability, "quick"])
    browser.wait_for(f"!!document.querySelector('#tasks tr[data-task-id=\"{held}\"][data-status=PENDING]')")

    # WHEN the operator ends maintenance and changes the algorithm
    browser.evaluate(f"document.querySelector('{toggle}').click()")
    eventually(
        lambda: fleet.server(quick.server_id)["status"], lambda s: s == "online", timeout=10, what="online"
    )
    fleet.wait_status(held, "COMPLETED")
    browser.evaluate("document.getElementById('algorithm').value = 'least-connections'")
    browser.evaluate("document.getElementById('algorithm-apply').click()")

    # THEN the gateway uses it
    eventually(
        lambda: api.get("/api/stats/load-balancer", token=api.admin).ok()["algorithm"],
        lambda name: name == "least-connections",
        timeout=10,
        what="the new algorithm",
    )
    browser.wait_for("document.getElementById('balancer-note').innerText.includes('least-connections')")

    # AND the running task finishes, and its row says so
    fleet.wait_status(running, "COMPLETED", timeout=20)
    browser.wait_for(
        f"!!document.querySelector('#tasks tr[data-task-id=\"{running}\"][data-status=COMPLETED]')"
    )

    # AND on a phone the page fits the screen's width, with nothing wider than it
    browser.viewport(390, 844, mobile=True)
    # (a mobile viewport widens to fit content that overflows: so its width must stay 390)
    browser.wait_for(
        "window.innerWidth === 390 && document.documentElement.scrollWidth <= 390", what="no sideways scroll"
    )
    progress_right = f"document.querySelector('#tasks tr[data-task-id=\"{running}\"] [role=progressbar]')"
    assert browser.evaluate(progress_right + ".getBoundingClientRect().right") <= 390
    assert browser.problems() == []

    fleet.gateway.set_algorithm("round-robin")
    fleet.cancel(waiting)


def test_the_page_and_its_assets_load_nothing_from_elsewhere_and_allow_no_inline_script(
    gateway: Gateway,
) -> None:
    page = httpx.get(f"{gateway.base}/dashboard", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "://" not in page.text, "the page must load nothing from another host"
    assert "<script>" not in page.text  # no inline script: the policy would block it
    dashboard = Path(__file__).parents[2] / "handlers" / "dashboard"
    for asset in sorted(dashboard.iterdir()):
        if asset.name == "index.html":
            continue
        reply = httpx.get(f"{gateway.base}/dashboard/assets/{asset.name}", timeout=10)
        assert reply.status_code == 200 and reply.content == asset.read_bytes(), asset.name
        assert "://" not in reply.text.replace("http://www.w3.org/2000/svg", ""), asset.name
    missing = httpx.get(f"{gateway.base}/dashboard/assets/..%2Fdocs.py", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"] == "Not found"


def test_a_refused_token_brings_back_the_form(gateway: Gateway, browser: Browser) -> None:
    # GIVEN a token signed with another secret, already in the tab's sessionStorage
    forged = auth.mint("another-secret-" + "y" * 40, sub="mallory", roles=["admin"], ttl_s=600)
    browser.open(f"{gateway.base}/dashboard")
    browser.evaluate(f"sessionStorage.setItem('taskgate.token', {json.dumps(forged)})")

    # WHEN the page loads again
    browser.open(f"{gateway.base}/dashboard")

    # THEN the API's 401 sends the operator back to the form, saying why
    browser.wait_for("!document.getElementById('token-form').hidden", what="the token form")
    assert "refused" in browser.evaluate("document.getElementById('token-error').innerText")
    assert browser.problems() == []


def _utc_hour() -> int:
    return datetime.datetime.now(datetime.UTC).hour


def _check_png(data: bytes, *, width: int) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    got_width, height = struct.unpack(">II", data[16:24])
    assert got_width == width and height >= 900, (got_width, height)
    pixels = zlib.decompress(b"".join(_chunks(data, b"IDAT")))
    assert len(data) > 20_000 and len(set(pixels)) > 64


def test_a_user_sees_only_its_own_tasks_and_no_admin_controls(gateway: Gateway, browser: Browser) -> None:
    # GIVEN a user with a task waiting, and another user's task
    api = gateway.api
    user = api.user()
    mine = api.create_task(user)
    theirs = api.create_task(api.user())

    # WHEN the user opens the dashboard with its token
    browser.open(f"{gateway.base}/dashboard")
    browser.evaluate(f"sessionStorage.setItem('taskgate.token', {json.dumps(user)})")
    browser.open(f"{gateway.base}/dashboard")

    # THEN only its own task is listed, and what only admins may do is not offered
    browser.wait_for(
        f"!!document.querySelector('#tasks tr[data-task-id=\"{mine}\"]')", what="the user's task"
    )
    assert [row["taskId"] for row in rows(browser, "tasks")] == [mine]
    assert theirs not in browser.evaluate("document.getElementById('tasks').innerText")
    assert "Only admins" in browser.evaluate("document.getElementById('servers').innerText")
    assert browser.evaluate("document.getElementById('algorithm').disabled") is True
    assert browser.evaluate("document.getElementById('algorithm-apply').hidden") is True
    assert browser.evaluate("document.getElementById('problem').hidden") is True
    assert browser.problems() == []


HELD = Mock(prefix="c-held", mode="async", delay_ms=60_000)


def sign_in(browser: Browser, base: str, token: str) -> None:
    browser.viewport(1280, 900)
    browser.open(f"{base}/dashboard")
    browser.evaluate(f"sessionStorage.setItem('taskgate.token', {json.dumps(token)})")
    browser.open(f"{base}/dashboard")
    browser.wait_for("!document.getElementById('main').hidden", what="the dashboard")


def open_task(browser: Browser, task_id: str) -> None:
    row = f'#tasks tr[data-task-id="{task_id}"] button'
    browser.wait_for(f"!!document.querySelector('{row}')", what=f"the row of {task_id}")
    browser.evaluate(f"document.querySelector('{row}').click()")
    browser.wait_for(f"document.getElementById('detail-title').innerText === 'Task {task_id}'")
    browser.wait_for("document.getElementById('task-detail').open", what="the task's detail")


def history_rows(browser: Browser) -> list[list[str]]:
    return browser.evaluate(
        "[...document.querySelectorAll('#detail-history tbody tr')]"
        ".map((tr) => [...tr.children].map((cell) => cell.innerText.trim()))"
    )


def test_a_tasks_detail_streams_its_output_shows_each_attempt_and_cancels_and_retries(
    fleet: Fleet, browser: Browser
) -> None:
    api, base = fleet.api, fleet.gateway.base
    # GIVEN a task held PROCESSING by its backend (the test speaks for the backend)
    (backend,) = fleet.add(HELD)
    task_id = fleet.submit(payload={"clip": "outro.mp4"})
    task = fleet.wait_status(task_id, "PROCESSING")
    token = api.callback(backend.server_id, task_id, task["attempts"])
    api.post(f"/api/task/{task_id}/output", json={"data": "frame 1 done"}, token=token).ok()

    # WHEN the owner opens it on the dashboard
    sign_in(browser, base, fleet.owner)
    open_task(browser, task_id)

    # THEN it shows what the task needs, its running attempt and the output so far
    assert fleet.capability in browser.evaluate("document.getElementById('detail-fields').innerText")
    browser.wait_for("document.querySelectorAll('#detail-output li').length === 1", what="the first chunk")
    assert history_rows(browser)[0][:2] == ["1", backend.server_id]
    assert history_rows(browser)[0][4] == "running"
    # AND output appended meanwhile appears as it arrives, in order
    api.post(f"/api/task/{task_id}/output", json={"data": {"frame": 2}}, token=token).ok()
    browser.wait_for("document.querySelectorAll('#detail-output li').length === 2", what="the second chunk")
    shown = browser.evaluate("[...document.querySelectorAll('#detail-output li')].map((li) => li.innerText)")
    assert shown == ["frame 1 done", '{"frame":2}']
    assert browser.evaluate("document.getElementById('detail-live').innerText") == "Live"

    # WHEN the owner cancels it from the detail
    browser.evaluate("document.getElementById('detail-cancel').click()")

    # THEN the API has it cancelled, and the attempt says so
    fleet.wait_status(task_id, "CANCELLED")
    browser.wait_for("document.querySelector('#detail-history tbody tr')?.dataset.outcome === 'cancelled'")
    assert browser.evaluate("document.getElementById('detail-cancel').hidden") is True

    # WHEN the owner retries it
    browser.wait_for("!document.getElementById('detail-retry').hidden", what="the Retry button")
    browser.evaluate("document.getElementById('detail-retry').click()")

    # THEN it runs again on the backend, a second attempt in its history
    fleet.wait_status(task_id, "PROCESSING")
    browser.wait_for("document.querySelectorAll('#detail-history tbody tr').length === 2", what="attempt 2")
    assert [row[4] for row in history_rows(browser)] == ["cancelled", "running"]
    assert browser.problems() == []
    fleet.cancel(task_id)


def test_an_error_is_shown_whole_and_every_failed_attempt_is_listed(fleet: Fleet, browser: Browser) -> None:
    api, base = fleet.api, fleet.gateway.base
    # GIVEN a task whose backend failed it with a long, multi-line error
    (backend,) = fleet.add(HELD)
    task_id = fleet.submit()
    task = fleet.wait_status(task_id, "PROCESSING")
    token = api.callback(backend.server_id, task_id, task["attempts"])
    error = "\n".join(f"line {n}: CUDA out of memory while decoding frame {n}" for n in range(60))
    api.put(f"/api/task/{task_id}", json={"status": "FAILED", "error": error}, token=token).ok()

    # WHEN its owner opens it
    sign_in(browser, base, fleet.owner)
    open_task(browser, task_id)

    # THEN the error is there in full, in a box that does not scroll or clip it
    browser.wait_for("document.getElementById('detail-outcome-title').innerText === 'Error'")
    assert browser.evaluate("document.getElementById('detail-outcome').innerText") == error
    assert browser.evaluate(
        "(() => { const box = document.getElementById('detail-outcome');"
        " return box.scrollHeight <= box.clientHeight + 1 && getComputedStyle(box).maxHeight === 'none'; })()"
    )
    (attempt,) = history_rows(browser)
    assert attempt[1] == backend.server_id and attempt[4] == "failed" and "line 59" in attempt[5]
    assert browser.problems() == []


def test_servers_show_their_last_sign_of_life_and_an_admin_removes_one(
    fleet: Fleet, browser: Browser
) -> None:
    api, base = fleet.api, fleet.gateway.base
    # GIVEN a server that never heartbeats but is checked every few hundred ms
    (backend,) = fleet.add(QUICK)
    eventually(
        lambda: fleet.server(backend.server_id)["health"]["lastCheckAt"], bool, timeout=10, what="a check"
    )

    # WHEN an admin looks at the servers
    sign_in(browser, base, api.admin)
    cell = f'#servers tr[data-server-id="{backend.server_id}"] td.last-seen'
    browser.wait_for(f"!!document.querySelector('{cell}')", what="the server's row")

    # THEN its last sign of life is its last check, not "never"
    seen = browser.evaluate(f"document.querySelector('{cell}').innerText")
    assert "never" not in seen and "checked" in seen and "ago" in seen

    # WHEN the admin presses Remove, then confirms
    remove = f'#servers tr[data-server-id="{backend.server_id}"] button.remove'
    browser.evaluate(f"document.querySelector('{remove}').click()")
    assert browser.evaluate(f"document.querySelector('{remove}').innerText") == "Confirm removal"
    assert api.get("/api/servers", token=api.admin).ok()["servers"]  # not removed by one press
    browser.evaluate(f"document.querySelector('{remove}').click()")

    # THEN the server is unregistered and its row goes
    eventually(
        lambda: api.get(f"/api/servers/{backend.server_id}/metrics", token=api.admin).status_code,
        lambda status: status == 404,
        timeout=10,
        what="the server removed",
    )
    fleet.server_ids.remove(backend.server_id)
    browser.wait_for(f"!document.querySelector('#servers tr[data-server-id=\"{backend.server_id}\"]')")
    assert browser.problems() == []


def test_statistics_over_a_chosen_range_of_days_with_a_labelled_scale(fleet: Fleet, browser: Browser) -> None:
    # GIVEN tasks finished today
    fleet.add(QUICK)
    fleet.wait_terminal([fleet.submit() for _ in range(3)])

    # WHEN an admin chooses the last 7 days
    sign_in(browser, fleet.gateway.base, fleet.api.admin)
    browser.wait_for("document.querySelectorAll('#chart g.hour').length === 24", what="today's chart")
    browser.evaluate(
        "(() => { const s = document.getElementById('stat-days'); s.value = '7';"
        " s.dispatchEvent(new Event('change')); })()"
    )

    # THEN the chart has one group per day, ending today, with today's tasks in it
    browser.wait_for("document.querySelectorAll('#chart g.day').length === 7", what="seven days")
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert browser.evaluate("[...document.querySelectorAll('#chart g.day')].at(-1).dataset.date") == today
    assert (
        float(
            browser.evaluate(
                "document.querySelector('#chart g.day:last-of-type rect.created').getAttribute('height')"
            )
        )
        > 0
    )
    assert "to" in browser.evaluate("document.getElementById('stats-title').innerText")
    # AND the scale is labelled: counts from 0 up to at least today's tasks
    ticks = browser.evaluate(
        "[...document.querySelectorAll('#chart text.tick')].map((t) => Number(t.textContent))"
    )
    assert ticks[0] == 0 and len(ticks) >= 2 and ticks == sorted(ticks) and ticks[-1] >= 3
    assert "per day" in browser.evaluate("document.getElementById('chart-title').innerText")
    assert browser.problems() == []

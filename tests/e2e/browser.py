"""Debian's headless Chromium driven over the Chrome DevTools Protocol: enough to load a page,
type and press keys, run a script in it, wait for what it shows and take a screenshot.

One browser process per `Browser`, one page, one CDP WebSocket (the `websockets` package,
which uvicorn[standard] brings). Uncaught page exceptions and Content-Security-Policy
violations are collected, so a test can assert the page ran cleanly.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.waiting import eventually

CHROMIUM = Path("/usr/bin/chromium")
# Headless, offline, nothing started beside the page (test_docs_browser.py runs it alike).
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
FLAGS = [*HEADLESS, "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
# The keys a test presses, as Input.dispatchKeyEvent wants them.
KEYS = {
    "Enter": {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
    "Escape": {"key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27},
    "Tab": {"key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9},
}


class PageError(AssertionError):
    """A script run in the page threw."""


class Browser:
    def __init__(self, profile: Path) -> None:
        if not CHROMIUM.exists():
            pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`)")
        profile.mkdir(parents=True, exist_ok=True)
        self._log = (profile.parent / f"{profile.name}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._closing = contextlib.ExitStack()
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        try:
            port = self._devtools_port(profile / "DevToolsActivePort")
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page = next(t for t in targets if t["type"] == "page")
            self._ws: ClientConnection = self._closing.enter_context(
                connect(page["webSocketDebuggerUrl"], max_size=None)
            )
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, path: Path) -> int:

        def written() -> str:
            assert self.proc.poll() is None, f"chromium exited with {self.proc.returncode}"
            return path.read_text().strip() if path.exists() else ""

        port = eventually(written, timeout=30, what="chromium's DevTools port", interval=0.05)
        return int(port.split()[0])

    def close(self) -> None:
        self._closing.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    # -- the protocol ------------------------------------------------------------------

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a CDP method and return its result; events that arrive meanwhile are kept."""
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            if "method" in message:
                self.events.append(message)

    def problems(self) -> list[str]:
        """Uncaught exceptions and CSP violations reported so far."""
        found = []
        for event in self.events:
            if event["method"] == "Runtime.exceptionThrown":
                found.append(event["params"]["exceptionDetails"].get("exception", {}).get("description", "?"))
            elif event["method"] == "Log.entryAdded":
                entry = event["params"]["entry"]
                if entry.get("source") == "security" or "Content Security Policy" in entry.get("text", ""):
                    found.append(entry["text"])
        return found

    # -- what tests do -------------------------------------------------------------------

    def before_each_page(self, source: str) -> None:
        """Run `source` in every page this browser opens from now on, before the page's own
        scripts (a fake clock, a recorder of the page's requests)."""
        self.send("Page.addScriptToEvaluateOnNewDocument", source=source)

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise PageError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 15.0, what: str | None = None) -> Any:
        """The expression's value once truthy (evaluated every 100 ms)."""
        return eventually(
            lambda: self.evaluate(expression), timeout=timeout, what=what or expression, interval=0.1
        )

    def type_text(self, text: str) -> None:
        """Into the focused element, as a paste would put it."""
        self.send("Input.insertText", text=text)

    def press(self, key: str) -> None:
        for kind in ("keyDown", "keyUp"):
            params = dict(KEYS[key])
            if kind == "keyUp":
                params.pop("text", None)
            self.send("Input.dispatchKeyEvent", type=kind, **params)

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    def screenshot(self) -> bytes:
        """The whole page at the current width (PNG)."""
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])

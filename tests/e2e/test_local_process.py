"""`taskgate dev`, `taskgate token` and `taskgate serve` as a user runs them: real processes.

The README's cURL example and its tour are run as written (only ports and paths differ) with
the token `taskgate dev` prints; a `kill -9` of `taskgate serve` loses nothing it acknowledged.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import EXAMPLE_TASK, _free_port, _wait_healthy

README = Path(__file__).parents[2] / "README.md"
CLI = [sys.executable, "-m", "tools.cli"]


def start(
    command: str, db: Path, port: int, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    base_env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    proc = subprocess.Popen(
        [*CLI, command, "--db", str(db), "--port", str(port)],
        env={**base_env, **(env or {})},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    _wait_healthy(proc, f"http://127.0.0.1:{port}", log)
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """`taskgate dev` on a fresh database: (base URL, the admin token it printed, db)."""
    port, db, log = _free_port(), tmp_path / "taskgate.db", tmp_path / "dev.log"
    proc = start("dev", db, port, log)
    try:
        printed = re.search(r"admin token \(7 days\): (\S+)", log.read_text())
        assert printed, log.read_text()
        yield f"http://127.0.0.1:{port}", printed.group(1), db
    finally:
        stop(proc)


def readme_curl() -> str:
    match = re.search(
        r"```bash\n(curl -X POST http://localhost:8787/api/task.*?)\n```", README.read_text(), re.S
    )
    assert match, "README lost its cURL example"
    return match.group(1)


def test_readme_curl_example_works_with_the_printed_token(dev: tuple[str, str, Path]) -> None:
    base, token, _ = dev
    command = readme_curl().replace("http://localhost:8787", base)
    done = subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, "TOKEN": token},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    created = httpx.Response(200, content=done.stdout).json()
    assert created["status"] == "PENDING"
    task = httpx.get(f"{base}/api/task/{created['id']}", headers={"Authorization": f"Bearer {token}"}).json()
    assert (task["id"], task["type"], task["priority"]) == (created["id"], "video-processing", 1)


def readme_tour() -> tuple[str, str]:
    """The README's tour: the command that starts the backend, then the rest as one script."""
    text = README.read_text()
    tour = text[text.index("## A 60-second tour") : text.index("## Configuration")]
    blocks = re.findall(r"```bash\n(.*?)```", tour, re.S)
    assert len(blocks) == 4, "README: the tour lost a step"
    lines = "".join(blocks).splitlines(keepends=True)
    backend = [line for line in lines if " mock-backend " in line]
    assert len(backend) == 1 and backend[0].rstrip().endswith("&"), "README: the tour starts no backend"
    rest = [line for line in lines if not line.startswith("export TOKEN=") and line not in backend]
    return backend[0].rstrip().removesuffix("&"), "".join(rest)


def test_readme_tour_runs_as_written(dev: tuple[str, str, Path]) -> None:
    # GIVEN `taskgate dev` and the backend the README's tour starts (only ports and paths differ)
    base, token, db = dev
    backend_port, log = str(_free_port()), db.parent / "backend.log"
    start_backend, script = readme_tour()

    def here(command: str) -> str:
        return (
            command.replace("http://localhost:8787", base)
            .replace("8080", backend_port)
            .replace(".venv/bin/taskgate", " ".join(CLI))
        )

    backend = subprocess.Popen(
        ["bash", "-c", "exec " + here(start_backend)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(backend, f"http://127.0.0.1:{backend_port}", log)
        # WHEN the rest of the tour runs: register the backend, submit with cURL and with the CLI
        done = subprocess.run(
            ["bash", "-ec", here(script)],
            env={**os.environ, "TOKEN": token, "TASKGATE_URL": base},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop(backend)
    # THEN the server is registered and both tasks complete on it
    assert done.returncode == 0, done.stderr
    assert '"serverId":"gpu-1"' in done.stdout.replace(" ", ""), done.stdout
    assert "100% COMPLETED" in done.stderr, done.stderr
    created = re.search(r'"id":"(task_[A-Za-z0-9_-]+)"', done.stdout.replace(" ", ""))
    assert created, done.stdout
    headers = {"Authorization": f"Bearer {token}"}
    task = httpx.get(f"{base}/api/task/{created.group(1)}", headers=headers).json()
    assert (task["status"], task["serverId"]) == ("COMPLETED", "gpu-1"), task


def test_the_dev_access_log_never_shows_a_websocket_token(dev: tuple[str, str, Path]) -> None:
    # GIVEN `taskgate dev` (it logs every request) and a WebSocket opened with ?token=
    import asyncio

    import websockets

    base, token, db = dev
    log = db.parent / "dev.log"

    async def subscribe() -> str:
        async with websockets.connect(f"{base.replace('http', 'ws')}/ws?token={token}") as ws:
            await ws.send('{"type": "subscribe", "taskId": "task_nope123"}')
            return str(await ws.recv())

    async def subscribe_encoded() -> str:
        # The server decodes `%74oken` to `token` and accepts it: the log must redact it too.
        async with websockets.connect(f"{base.replace('http', 'ws')}/ws?%74oken={token}") as ws:
            await ws.send('{"type": "subscribe", "taskId": "task_nope123"}')
            return str(await ws.recv())

    # WHEN it connects and gets an answer
    assert "Not found" in asyncio.run(subscribe())
    assert "Not found" in asyncio.run(subscribe_encoded())
    # THEN the access log has the request, with the token redacted; the token appears only
    # where dev printed it for the operator
    text = log.read_text()
    assert "/ws?token=<redacted>" in text, text[-2000:]
    assert "/ws?%74oken=<redacted>" in text, text[-2000:]
    assert text.count(token) == 1


def test_dev_allows_loopback_webhooks_and_says_so_serve_does_not(
    dev: tuple[str, str, Path], tmp_path: Path
) -> None:
    # GIVEN `taskgate dev` (its banner) and `taskgate serve` on another database
    base, token, db = dev
    assert "webhooks: loopback receivers allowed" in (db.parent / "dev.log").read_text()
    hook = {**EXAMPLE_TASK, "webhook": "http://127.0.0.1:9/internal-only/admin-action"}
    headers = {"Authorization": f"Bearer {token}"}
    # WHEN a task asks for a loopback webhook on each
    assert httpx.post(f"{base}/api/task", json=hook, headers=headers).status_code == 200
    port, served = _free_port(), tmp_path / "serve"
    served.mkdir()
    secret = "loopback-serve-secret-" * 3
    proc = start("serve", served / "t.db", port, served / "serve.log", {"JWT_SECRET": secret})
    try:
        from core.domain import auth

        user = {"Authorization": f"Bearer {auth.mint(secret, sub='u', roles=['user'], ttl_s=60)}"}
        refused = httpx.post(f"http://127.0.0.1:{port}/api/task", json=hook, headers=user)
        # THEN dev takes it and serve refuses it, naming the field
        assert refused.status_code == 400, refused.text
        assert "webhook" in refused.json()["details"] and "loopback" in refused.json()["details"]
        assert "loopback" not in (served / "serve.log").read_text()
    finally:
        stop(proc)


def test_token_command_mints_with_the_secret_beside_the_database(dev: tuple[str, str, Path]) -> None:
    base, _, db = dev
    minted = subprocess.run(
        [*CLI, "token", "--role", "user", "--sub", "alice", "--ttl", "15m", "--db", str(db)],
        env={k: v for k, v in os.environ.items() if k != "JWT_SECRET"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {minted}"}
    created = httpx.post(f"{base}/api/task", json=EXAMPLE_TASK, headers=headers)
    assert created.status_code == 200, created.text
    # a user is not an admin
    assert httpx.get(f"{base}/api/servers", headers=headers).status_code == 403


def test_token_command_refuses_bad_input(tmp_path: Path) -> None:
    for args in (
        ["--role", "root", "--sub", "a"],
        ["--role", "service", "--sub", "a"],
        ["--role", "service", "--sub", "a", "--server-id", "not-registered"],
        ["--sub", "a", "--ttl", "1y"],
    ):
        done = subprocess.run(
            [*CLI, "token", "--db", str(tmp_path / "x.db"), *args], capture_output=True, text=True
        )
        assert done.returncode == 2, (args, done.stdout)
        assert done.stderr.startswith("taskgate token:"), done.stderr


def test_kill_9_loses_no_acknowledged_task(tmp_path: Path) -> None:
    db, log = tmp_path / "taskgate.db", tmp_path / "serve.log"
    env = {"JWT_SECRET": "durability-secret-" * 4, "RATE_LIMIT_TASK_CREATE": "0", "RATE_LIMIT_DEFAULT": "0"}
    port = _free_port()
    proc = start("serve", db, port, log, env)
    from core.domain import auth

    headers = {
        "Authorization": f"Bearer {auth.mint(env['JWT_SECRET'], sub='alice', roles=['user'], ttl_s=600)}"
    }
    acknowledged = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            for i in range(300):
                reply = client.post("/api/task", json={**EXAMPLE_TASK, "priority": i % 11})
                assert reply.status_code == 200
                acknowledged.append((reply.json()["id"], i % 11))
    finally:
        stop(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL

    port = _free_port()
    proc = start("serve", db, port, log, env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            for task_id, priority in acknowledged:
                task = client.get(f"/api/task/{task_id}").json()
                assert (task["id"], task["priority"], task["status"]) == (task_id, priority, "PENDING")
    finally:
        stop(proc)

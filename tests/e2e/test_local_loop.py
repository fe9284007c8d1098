"""The documented local loop, as far as this machine allows (no Docker): a real moto server as
the local endpoint, deploy/local_resources.py creating the table, queue and secret on it, and
`python -m tools.local_poller` with a copy of deploy/local-env.json (its endpoint and
PUBLIC_URL ports changed) serving the HTTP functions in place of `sam local start-api` and
feeding the dispatcher its queue.

GIVEN that loop and an asynchronous backend on loopback, WHEN a server is registered and a
task created over HTTP, THEN the task is dispatched without anything else running, the backend
gets a callback URL under PUBLIC_URL, and its callback there completes the task.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.e2e.fleet import free_port

ROOT = Path(__file__).resolve().parents[2]


class AsyncBackend:
    """Accepts every predict (202) and keeps its body; healthy."""

    def __init__(self) -> None:
        self.predicts: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._reply(200, b'{"status": "ok"}')

            def do_POST(self) -> None:
                backend.predicts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                backend.arrived.set()
                self._reply(202, b'{"status": "accepted"}')

            def _reply(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def serial_moto_server(port: int) -> Any:
    """A moto server that answers one request at a time. moto applies a DynamoDB transaction
    whole only then: with threads, a transaction that fails restores its copy of the table over
    a claim another thread just made (DynamoDB is atomic; moto's server, threaded, is not)."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class SerialMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            self._server = make_server(
                self._ip_address, self._port, app, False, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerialMotoServer(ip_address="127.0.0.1", port=port, verbose=False)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[SimpleLoop]:
    moto_port, api_port = free_port(), free_port()
    moto = serial_moto_server(moto_port)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto_port}"
    poller: subprocess.Popen[str] | None = None
    try:
        subprocess.run(
            [sys.executable, "deploy/local_resources.py", "--endpoint", endpoint],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        )
        env_vars = json.loads((ROOT / "deploy" / "local-env.json").read_text())
        parameters = env_vars["Parameters"]
        assert parameters["PUBLIC_URL"] == "http://127.0.0.1:3000"  # sam local start-api's address
        for name in ("AWS_ENDPOINT_URL", "QUEUE_URL"):
            parameters[name] = parameters[name].replace("host.docker.internal:5000", f"127.0.0.1:{moto_port}")
        parameters["PUBLIC_URL"] = f"http://127.0.0.1:{api_port}"
        env_file = tmp_path / "local-env.json"
        env_file.write_text(json.dumps(env_vars))
        poller = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tools.local_poller",
                "--env-vars",
                str(env_file),
                "--serve-api",
                str(api_port),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"PATH": "/usr/bin:/bin", "POWERTOOLS_LOG_LEVEL": "WARNING", "SWEEP_INTERVAL": "1000"},
        )
        assert poller.stdout is not None
        first = poller.stdout.readline()
        assert first.startswith("local poller:"), first + poller.stdout.read(4000)
        output: list[str] = []
        threading.Thread(target=lambda: output.extend(poller.stdout), daemon=True).start()  # type: ignore[union-attr]
        yield SimpleLoop(endpoint, f"http://127.0.0.1:{api_port}", output)
    finally:
        if poller is not None:
            poller.terminate()
            poller.wait(timeout=20)
        moto.stop()


class SimpleLoop:
    def __init__(self, endpoint: str, api: str, output: list[str]) -> None:
        import boto3

        self.api = api
        self.output = output  # the poller's log, for failure messages
        ssm = boto3.client(
            "ssm",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        self.secret = ssm.get_parameter(Name="/taskgate/jwt-secret", WithDecryption=True)["Parameter"][
            "Value"
        ]
        self.http = urllib3.PoolManager()

    def call(self, method: str, path: str, token: str, body: Any = None, url: str | None = None) -> Any:
        response = self.http.request(
            method,
            url or f"{self.api}{path}",
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            retries=False,
            timeout=30,
        )
        assert response.status == 200, (method, path, response.status, response.data[:500], self.output[-20:])
        return json.loads(response.data)


def test_a_task_created_on_the_local_loop_is_dispatched_and_completed_by_callback(loop: SimpleLoop) -> None:
    from core.domain import auth

    backend = AsyncBackend()
    try:
        admin = auth.mint(loop.secret, sub="root", roles=["admin"], ttl_s=600)
        server = {
            "id": "local-gpu",
            "name": "local-gpu",
            "endpoints": {"predict": f"{backend.base}/predict", "health": f"{backend.base}/health"},
            "capabilities": ["video"],
        }
        loop.call("POST", "/api/servers", admin, server)
        created = loop.call("POST", "/api/task", admin, {"type": "video", "priority": 1, "payload": {"n": 1}})

        # THEN the poller's dispatcher sends it to the backend, with a callback under PUBLIC_URL
        assert backend.arrived.wait(timeout=60), "the task was never dispatched"
        (predict,) = backend.predicts
        assert predict["task_id"] == created["id"]
        assert predict["callback_url"] == f"{loop.api}/api/task/{created['id']}"

        # WHEN the backend reports there THEN the task is COMPLETED
        report = {"status": "COMPLETED", "result": {"ok": True}}
        loop.call("PUT", "", predict["callback_token"], report, url=predict["callback_url"])
        task = loop.call("GET", f"/api/task/{created['id']}", admin)
        assert (task["status"], task["result"], task["attempts"]) == ("COMPLETED", {"ok": True}, 1)
    finally:
        backend.server.shutdown()
        backend.server.server_close()


def test_the_poller_reads_sam_local_s_file_as_a_host_process(tmp_path: Path) -> None:
    from tools.local_poller import load_env_vars

    parameters = load_env_vars(ROOT / "deploy" / "local-env.json")
    assert parameters["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert parameters["QUEUE_URL"].startswith("http://127.0.0.1:5000/")
    assert parameters["PUBLIC_URL"] == "http://127.0.0.1:3000"

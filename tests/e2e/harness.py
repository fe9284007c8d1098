"""What the e2e tests share: the two deployments, a client for either, the reference's
example bodies, and the error-shape check every error reply goes through."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from core.domain import auth
from core.domain.ids import now_ms
from core.domain.models import Task, TaskStatus
from core.ports.storage import Store
from tests.support.waiting import eventually
from tools import moto_env
from tools.moto_env import FAKE_AWS_ENV

SECRET = "e2e-test-secret-" + "x" * 48
RATE_LIMITS_OFF = {
    "RATE_LIMIT_DEFAULT": "0",
    "RATE_LIMIT_TASK_CREATE": "0",
    "RATE_LIMIT_SERVER_REGISTER": "0",
    "RATE_LIMIT_SERVICE": "0",
}
# Set before any boto3 client exists, so nothing can reach a real account.
HOUR_MS = 3_600_000
# A capability no server has: tasks created with it stay PENDING until a test moves them.
HELD = "held-for-test"

# The reference's bodies, verbatim.
EXAMPLE_TASK: dict[str, Any] = {
    "type": "video-processing",
    "priority": 1,
    "payload": {
        "mimeType": "video/mp4",
        "model": "standard",
        "video_quality": "1080p",
        "video_url": "https://example.com/video.mp4",
        "enable_upscale": False,
    },
    "capabilities": ["video"],
    "async": True,
}
EXAMPLE_SERVER: dict[str, Any] = {
    "name": "gpu-server-01",
    "endpoints": {
        "predict": "https://server1.example.com/predict",
        "health": "https://server1.example.com/health",
        "metrics": "https://server1.example.com/metrics",
    },
    "apiKey": "server-api-key",
    "maxConcurrent": 10,
    "capabilities": ["video", "image"],
    "groups": ["production"],
    "priority": 1,
}
EXAMPLE_COMPLETED: dict[str, Any] = {
    "status": "COMPLETED",
    "result": {"output_url": "https://example.com/processed.mp4", "duration": 120},
}
EXAMPLE_HEARTBEAT: dict[str, Any] = {
    "status": "healthy",
    "activeTasks": 3,
    "metrics": {"cpu": 45, "memory": 60, "gpu": 80},
}

_NOTHING: Any = object()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Reply:
    """An HTTP response, with the checks every test makes on it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status_code = response.status_code
        self.headers = response.headers
        self.text = response.text
        if self.status_code >= 400:
            self._check_error_shape()

    def json(self) -> Any:
        return self.response.json()

    def ok(self) -> Any:
        """The 200 body (the reference's success status for every route)."""
        assert self.status_code == 200, f"expected 200, got {self.status_code}: {self.text}"
        assert self.headers["content-type"].startswith("application/json")
        return self.json()

    def _check_error_shape(self) -> None:
        assert self.headers.get("content-type", "").startswith("application/json"), self.text
        body = self.json()
        assert isinstance(body, dict) and set(body) == {"error", "details"}, body
        assert isinstance(body["error"], str) and body["error"], body
        assert isinstance(body["details"], str) and body["details"], body
        assert "Traceback" not in self.text

    def error(
        self,
        status: int,
        error: str | None = None,
        *,
        details: str | None = None,
        mentions: str | tuple[str, ...] = (),
    ) -> str:
        """Assert an error reply: its status, title, exact details or words they contain."""
        assert self.status_code == status, f"expected {status}, got {self.status_code}: {self.text}"
        body = self.json()
        if error is not None:
            assert body["error"] == error, body
        if details is not None:
            assert body["details"] == details, body
        for word in (mentions,) if isinstance(mentions, str) else mentions:
            assert word in body["details"], body
        return str(body["details"])


class Api:
    """One deployment of the HTTP API, and the few shortcuts the tests share."""

    def __init__(
        self,
        name: str,
        client: httpx.Client,
        store: Store | None,
        secret: str,
        backend: str | None = None,
    ) -> None:
        # A healthy backend for servers to point at, where a dispatcher and health checks run.
        self.backend = backend
        self.name = name
        self.client = client
        self._store = store
        self.secret = secret
        self.admin = self.token("admin", unique("admin"))
        self.registered: list[str] = []

    @property
    def store(self) -> Store:
        """The deployment's own storage, where the test process can open it (not `dev --aws`,
        whose emulated table lives in that process)."""
        assert self._store is not None, f"{self.name}: the test has no direct access to its store"
        return self._store

    # -- HTTP --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = _NOTHING,
        content: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": sent}
        if json is not _NOTHING:
            kwargs["content"] = msgspec.json.encode(json)
            sent.setdefault("Content-Type", "application/json")
        elif content is not None:
            kwargs["content"] = content
        reply = Reply(self.client.request(method, path, **kwargs))
        if (method, path, reply.status_code) == ("POST", "/api/servers", 200):
            self.registered.append(reply.json()["serverId"])
        return reply

    def forget_servers(self) -> None:
        """Drop the servers registered so far, so server lists stay short (moto reads every
        item of a list, one by one)."""
        while self.registered:
            self.store.delete_server(self.registered.pop())

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Reply:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Reply:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Reply:
        return self.request("DELETE", path, **kwargs)

    # -- principals --------------------------------------------------------------------

    def token(self, role: str, sub: str | None = None, *, ttl_s: int = 3600, **claims: Any) -> str:
        return auth.mint(self.secret, sub=sub or unique(role), roles=[role], ttl_s=ttl_s, **claims)

    def user(self) -> str:
        """A token for a new user, who owns nothing yet."""
        return self.token("user", unique("user"))

    def service(self, server_id: str) -> str:
        """The server's own token, bound to its registration (as registration returns it)."""
        server = self.store.get_server(server_id)
        tid = server.token_id if server is not None else "not-registered"
        return self.token("service", f"server:{server_id}", server_id=server_id, tid=tid or None)

    def callback(self, server_id: str, task_id: str, attempt: int) -> str:
        """The task-scoped token dispatch sends a backend as `callback_token`."""
        return self.token(
            "service", f"server:{server_id}", server_id=server_id, task_id=task_id, attempt=attempt
        )

    # -- shortcuts ---------------------------------------------------------------------

    def create_task(self, token: str, **overrides: Any) -> str:
        """A task that the dispatcher leaves PENDING (it needs a capability no server has), so
        the test decides when it runs; pass `capabilities` to let it be dispatched."""
        body = {**EXAMPLE_TASK, "capabilities": [*EXAMPLE_TASK["capabilities"], HELD], **overrides}
        return str(self.post("/api/task", json=body, token=token).ok()["id"])

    def register_server(self, **overrides: Any) -> dict[str, Any]:
        """Registers a server under a fresh id; returns the registration reply. Where a
        sweeper runs, the server points at the healthy backend, and the reply comes once its
        first (immediate) health check landed, so that check never overtakes a test's own
        heartbeats."""
        endpoints = EXAMPLE_SERVER["endpoints"]
        if self.backend is not None:
            endpoints = {name: f"{self.backend}/{name}" for name in ("predict", "health", "metrics")}
        body = {**EXAMPLE_SERVER, "endpoints": endpoints, "id": unique("srv"), **overrides}
        reply: dict[str, Any] = self.post("/api/servers", json=body, token=self.admin).ok()
        if self.backend is not None:
            eventually(
                lambda: self.server(reply["serverId"])["health"]["lastCheckAt"],
                lambda checked_at: checked_at is not None,
                timeout=10,
                what="the first health check",
                interval=0.01,
            )
        return reply

    def task(self, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.get(f"/api/task/{task_id}", token=self.admin).ok()
        return body

    def servers(self, query: str = "") -> dict[str, dict[str, Any]]:
        found = self.get(f"/api/servers{query}", token=self.admin).ok()["servers"]
        return {server["id"]: server for server in found}

    def server(self, server_id: str) -> dict[str, Any]:
        return self.servers()[server_id]

    def metrics(self, server_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.get(f"/api/servers/{server_id}/metrics", token=self.admin).ok()
        return body

    def start_processing(self, task_id: str, server_id: str) -> Task:
        """What dispatch will do: PENDING -> PROCESSING on the server, taking a slot."""
        task = self.store.get_task(task_id)
        assert task is not None and task.status is TaskStatus.PENDING, task
        now = now_ms()
        return self.store.claim_task(
            task,
            {
                "status": TaskStatus.PROCESSING,
                "server_id": server_id,
                "attempts": task.attempts + 1,
                "started_at": now,
                "deadline": now + HOUR_MS,
                "updated_at": now,
            },
        )

    def end_attempt(self, task_id: str, status: TaskStatus = TaskStatus.PENDING) -> Task:
        """What the sweeper will do: end a PROCESSING attempt (requeue, or TIMEOUT)."""
        task = self.store.get_task(task_id)
        assert task is not None and task.status is TaskStatus.PROCESSING, task
        now = now_ms()
        changes: dict[str, Any] = {"status": status, "updated_at": now, "deadline": None}
        if status is TaskStatus.PENDING:
            changes.update(server_id=None, queued_at=now, started_at=None, progress=0)
        else:
            changes.update(completed_at=now, error="Timed out")
        return self.store.release_task(task, changes, server_counters={"failure_count": 1})

    def processing_task(self, owner: str | None = None) -> tuple[str, str, str]:
        """A task PROCESSING (attempt 1) on a fresh server: (task id, server id, owner token)."""
        owner = owner or self.user()
        server_id = self.register_server()["serverId"]
        task_id = self.create_task(owner)
        self.start_processing(task_id, server_id)
        return task_id, server_id, owner


# -- deployments ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(tmp: Path) -> Iterator[Api]:
    db = tmp / "t.db"
    port = _free_port()
    env = {**os.environ, "JWT_SECRET": SECRET, **RATE_LIMITS_OFF}
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "serve", "--db", str(db), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    backend_port = _free_port()
    backend = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "mock-backend", "--port", str(backend_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(proc, base, tmp / "serve.log")
        _wait_healthy(backend, f"http://127.0.0.1:{backend_port}", tmp / "serve.log")
        # Another process on the same file, as WAL allows: the test's view of the store.
        from core.local.sqlite import SqliteStore

        store = SqliteStore(str(db))
        with httpx.Client(base_url=base, timeout=10.0) as client:
            yield Api("serve", client, store, SECRET, backend=f"http://127.0.0.1:{backend_port}")
        store.close()
    finally:
        for process in (proc, backend):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"taskgate serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"{base}/health", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(healthy, timeout=20, what="taskgate serve answering /health", interval=0.05)
    except AssertionError as exc:
        pytest.fail(f"{exc}:\n{log.read_text()}")


def dynamodb() -> Iterator[Api]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**FAKE_AWS_ENV, **RATE_LIMITS_OFF}.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS"):
            env.delenv(name, raising=False)
        import boto3
        from moto import mock_aws
        from starlette.testclient import TestClient

        from core.aws.dynamodb import DynamoStore
        from core.aws.payloads import PayloadBucket
        from core.aws.sqs import SqsQueue
        from core.config import Config
        from core.services.context import Context
        from handlers._http import create_app
        from handlers.routes import ROUTES
        from tests.support.aws import create_table

        with moto_env.one_request_at_a_time(), moto_env.faster_dynamodb(), mock_aws():
            dynamodb = boto3.client("dynamodb", region_name="us-east-1")
            sqs = boto3.client("sqs", region_name="us-east-1")
            s3 = boto3.client("s3", region_name="us-east-1")
            bucket = unique("payloads")
            s3.create_bucket(Bucket=bucket)
            # As deployed: large payloads and outcomes in the bucket, the items keeping keys.
            store = DynamoStore(create_table(dynamodb), client=dynamodb, payloads=PayloadBucket(bucket, s3))
            queue = SqsQueue(sqs.create_queue(QueueName=unique("tasks"))["QueueUrl"], sqs)
            ctx = Context(store=store, queue=queue, config=Config.from_env(jwt_secret=SECRET))
            app = create_app(ROUTES, ctx)
            with TestClient(app, raise_server_exceptions=False) as client:
                yield Api("dynamodb", client, store, SECRET)
            store.close()

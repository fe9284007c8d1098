"""Starting and stopping the processes a benchmark measures (loopback only)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

SECRET = "benchmark-secret-" * 4
NO_RATE_LIMITS = {
    "RATE_LIMIT_DEFAULT": "0",
    "RATE_LIMIT_TASK_CREATE": "0",
    "RATE_LIMIT_SERVER_REGISTER": "0",
    "RATE_LIMIT_SERVICE": "0",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {timeout_s} s")


@contextmanager
def started(
    args: list[str], health_url: str, env: dict[str, str] | None = None, timeout_s: float = 20
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(health_url, proc, timeout_s)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Service:
    base: str
    pid: int


@contextmanager
def gateway(extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """`taskgate serve` on a fresh database; yields its base URL."""
    with serve(extra_env) as service:
        yield service.base


@contextmanager
def serve(extra_env: dict[str, str] | None = None, *, db: Path | None = None) -> Iterator[Service]:
    """`taskgate serve` on `db` (default: a fresh database); yields its URL and process id."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {"JWT_SECRET": SECRET, **NO_RATE_LIMITS, **(extra_env or {})}
        path = db or Path(tmp) / "bench.db"
        args = ["-m", "tools.cli", "serve", "--db", str(path), "--port", str(port)]
        with started(args, f"{base}/health", env) as proc:
            yield Service(base, proc.pid)


@contextmanager
def serve_aws(extra_env: dict[str, str] | None = None) -> Iterator[Service]:
    """`taskgate dev --aws` (moto in-process); yields its URL and process id."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"JWT_SECRET": SECRET, **NO_RATE_LIMITS, "POWERTOOLS_LOG_LEVEL": "ERROR", **(extra_env or {})}
    args = ["-m", "tools.cli", "dev", "--aws", "--port", str(port)]
    with started(args, f"{base}/health", env, timeout_s=60) as proc:
        yield Service(base, proc.pid)


@contextmanager
def instant_backends(count: int) -> Iterator[list[str]]:
    """`count` instant sync backends (bench/instant_backend.py); yields their base URLs."""
    with _many(count) as bases:
        yield bases


@contextmanager
def _many(count: int) -> Iterator[list[str]]:
    if count == 0:
        yield []
        return
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with started(["-m", "bench.instant_backend", str(port)], f"{base}/health"), _many(count - 1) as rest:
        yield [base, *rest]


@contextmanager
def relay(backends: list[str]) -> Iterator[str]:
    """The floor relay (bench/relay.py) in front of `backends`; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with started(["-m", "bench.relay", str(port), *backends], f"{base}/health"):
        yield base


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS in /proc/<pid>/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/<pid>/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

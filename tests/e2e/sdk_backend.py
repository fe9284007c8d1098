"""A backend written with the SDK, as a user writes one, for tests/e2e/test_backend_sdk.py:
each task reports half its progress and a first chunk of output, then waits until the file
its payload names exists (the test's go-ahead) or it is cancelled. Run as
`uvicorn tests.e2e.sdk_backend:app`; SDK_SERVER_ID names the server it answers for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from taskgate.backend import Job, create_app


def handler(job: Job) -> Any:
    gate = Path(job.payload["gate"])
    job.progress(50, "halfway")
    job.emit({"step": 1})
    while not gate.exists():
        if job.wait_cancelled(0.02):
            return None  # cancelled: nothing is reported
    if job.payload.get("fail"):
        raise RuntimeError(job.payload["fail"])
    job.emit({"step": 2})
    return {"steps": 2, "type": job.type, "priority": job.priority}


app = create_app(handler, server_id=os.environ["SDK_SERVER_ID"], max_concurrent=2)

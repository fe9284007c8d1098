"""The backend SDK: a backend written as one function, served as an ASGI app.

    from taskgate.backend import create_app

    def handler(job):
        job.progress(50, "halfway")
        job.emit({"token": "hello"})
        return {"echo": job.payload}

    app = create_app(handler)      # then: uvicorn mybackend:app --port 8080

It speaks taskgate's backend protocol (docs/BACKENDS.md): `/predict` answers 202 at once and
the work reports through the task's callback URL with its callback token. Nothing of the
gateway is imported: a backend installs `taskgate` and runs where the gateway does not.
"""

from __future__ import annotations

from taskgate.backend.app import Backend, create_app
from taskgate.backend.job import Job, JobRequest
from taskgate.backend.reports import Report

__all__ = ["Backend", "Job", "JobRequest", "Report", "create_app"]

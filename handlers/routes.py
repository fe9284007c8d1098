"""Every HTTP route group of the API: what the one-machine app serves and what /openapi.json
describes (each Lambda function serves its own group)."""

from __future__ import annotations

from handlers import docs, metrics, servers, stats, system, tasks

ROUTES = [*tasks.routes, *servers.routes, *stats.routes, *system.routes, *docs.routes, *metrics.routes]

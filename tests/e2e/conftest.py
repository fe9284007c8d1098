"""The HTTP API, end to end, against both deployments of the same routes.

- serve: a real `taskgate serve` process on a SQLite file, spoken to over HTTP.
- dynamodb: the same Starlette app in-process on DynamoDB and SQS, both emulated by moto.

Each deployment is started once per test module; tests use unique ids and principals, so they
never see each other's tasks. `api.store` is the deployment's own storage, which is how a test
puts a task in PROCESSING while dispatch is not there to do it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import Api, dynamodb, serve


@pytest.fixture(scope="module", params=["serve", "dynamodb"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    if request.param == "serve":
        yield from serve(tmp_path_factory.mktemp("serve"))
    else:
        yield from dynamodb()


@pytest.fixture
def api(deployment: Api) -> Iterator[Api]:
    yield deployment
    deployment.forget_servers()

"""The AWS Context reads the signing secret from SSM through Powertools' cache, on every use:
a rotated secret is picked up without replacing the container."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from core.aws import context as aws
from core.aws.context import build_context
from core.domain import auth
from core.errors import UnauthorizedError
from tests.support.aws import create_table
from tools.moto_env import FAKE_AWS_ENV

NAME = "/taskgate/jwt-secret"


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.setenv("JWT_SECRET_PARAMETER", NAME)
    with mock_aws():
        monkeypatch.setenv("TABLE_NAME", create_table(boto3.client("dynamodb")))
        monkeypatch.setenv("QUEUE_URL", boto3.client("sqs").create_queue(QueueName="q")["QueueUrl"])
        client = boto3.client("ssm")
        client.put_parameter(Name=NAME, Value="first-secret-" * 4, Type="SecureString")
        monkeypatch.setattr(aws, "_ssm", None)  # a fresh container's provider, inside the mock
        yield client


def test_a_rotated_secret_is_used_once_the_cache_expires(ssm: object) -> None:
    # GIVEN a context built with the first secret
    ctx = build_context()
    assert ctx.jwt_secret == "first-secret-" * 4

    # WHEN the parameter is rotated and Powertools' cache expires (cleared here)
    boto3.client("ssm").put_parameter(
        Name=NAME, Value="second-secret-" * 4, Type="SecureString", Overwrite=True
    )
    assert ctx.jwt_secret == "first-secret-" * 4  # still cached
    aws.ssm_provider().clear_cache()

    # THEN the same context verifies only tokens signed with the new secret
    fresh = auth.mint("second-secret-" * 4, sub="a", roles=["user"], ttl_s=60)
    stale = auth.mint("first-secret-" * 4, sub="a", roles=["user"], ttl_s=60)
    assert auth.verify(ctx.jwt_secret, f"Bearer {fresh}").sub == "a"
    with pytest.raises(UnauthorizedError):
        auth.verify(ctx.jwt_secret, f"Bearer {stale}")

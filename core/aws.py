"""The AWS deployment's Context: DynamoDB and SQS, built once per Lambda container.

Configuration comes from the function's environment (see template.yaml):
TABLE_NAME, QUEUE_URL, and JWT_SECRET or JWT_SECRET_PARAMETER (an SSM SecureString name).
"""

from __future__ import annotations

import os

from core.config import Config
from core.context import Context


def jwt_secret_from_env() -> str:
    secret = os.environ.get("JWT_SECRET", "")
    parameter = os.environ.get("JWT_SECRET_PARAMETER", "")
    if not secret and parameter:
        from aws_lambda_powertools.utilities import parameters

        value = parameters.get_parameter(parameter, decrypt=True, max_age=300)
        secret = value if isinstance(value, str) else ""
    if not secret:
        raise RuntimeError("Set JWT_SECRET or JWT_SECRET_PARAMETER")
    return secret


def build_context() -> Context:
    from core.sqs import SqsQueue
    from core.storage.dynamodb import DynamoStore

    config = Config.from_env(jwt_secret=jwt_secret_from_env())
    return Context(
        store=DynamoStore(os.environ["TABLE_NAME"]),
        queue=SqsQueue(os.environ["QUEUE_URL"]),
        config=config,
    )

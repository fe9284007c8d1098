"""Create what `sam local start-api` needs on a local endpoint serving DynamoDB, SQS and SSM
(`moto_server`, for one): the table as template.yaml defines it, the dispatch queue, the
payload bucket and the JWT secret. Idempotent. Run from the repository root with the project's venv:

    python deploy/local_resources.py --endpoint http://127.0.0.1:5000

Then start the API with deploy/local-env.json (docs/DEPLOY.md).
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools import moto_env

TABLE = "taskgate-local"
QUEUE = "taskgate-local-tasks"
BUCKET = "taskgate-local-payloads"
SECRET = "/taskgate/jwt-secret"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:5000")
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()
    session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=args.region)
    dynamodb = session.client("dynamodb", endpoint_url=args.endpoint)
    sqs = session.client("sqs", endpoint_url=args.endpoint)
    ssm = session.client("ssm", endpoint_url=args.endpoint)
    s3 = session.client("s3", endpoint_url=args.endpoint)

    if TABLE not in dynamodb.list_tables()["TableNames"]:
        moto_env.create_table(dynamodb, TABLE)
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)
    queue_url = sqs.create_queue(QueueName=QUEUE, Attributes={"VisibilityTimeout": "360"})["QueueUrl"]
    try:
        ssm.get_parameter(Name=SECRET)
    except ssm.exceptions.ParameterNotFound:
        ssm.put_parameter(Name=SECRET, Type="SecureString", Value=secrets.token_urlsafe(48))
    print(f"table {TABLE}, queue {queue_url}, payload bucket {BUCKET}, secret {SECRET} on {args.endpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

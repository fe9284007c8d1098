"""Large task payloads in S3 (AWS only): above PAYLOAD_INLINE_LIMIT a task's payload is written
once, at creation, to the payload bucket, and the task item holds a reference instead. The item
then stays small, and so does every write of it (DynamoDB bills a write by the item's size) and
every index entry that copies it.

A payload never changes, so a container keeps the last few it read (`CACHED`): the writes of one
task's life that return the item (claim, release, callbacks) read the object at most once per
container. The bucket's lifecycle rule (template.yaml, PayloadRetentionDays) removes payloads
after their tasks: an object is written before its task item, so a failed create leaves at most
an object that expires, never a task without its payload.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from core.errors import UnavailableError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# Payloads (as JSON) above this many bytes go to the bucket.
PAYLOAD_INLINE_LIMIT = 8 * 1024
CACHED = 16
_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})


class PayloadBucket:
    def __init__(self, bucket: str, client: S3Client | None = None) -> None:
        self.bucket = bucket
        # A local endpoint (AWS_ENDPOINT_URL: moto, under `sam local`) serves buckets by path.
        local = bool(os.environ.get("AWS_ENDPOINT_URL"))
        config = _CLIENT_CONFIG.merge(Config(s3={"addressing_style": "path"})) if local else _CLIENT_CONFIG
        self._client = client or boto3.client("s3", config=config)
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(task_id: str) -> str:
        return f"payloads/{task_id}.json"

    def put(self, task_id: str, payload_json: str) -> str:
        """Store a payload; returns the reference the task item keeps."""
        key = self.key(task_id)
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=payload_json.encode(), ContentType="application/json"
            )
        except (ClientError, ConnectionError, HTTPClientError) as exc:
            raise UnavailableError(f"The payload store is unavailable ({type(exc).__name__})") from exc
        self._remember(key, payload_json)
        return key

    def get(self, key: str) -> str:
        """The payload's JSON; "{}" if it is gone (its task outlived PayloadRetentionDays)."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            found = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise UnavailableError(f"The payload store is unavailable ({type(exc).__name__})") from exc
            log.warning("payload %s is gone: the task outlived the bucket's retention", key)
            return "{}"
        except (ConnectionError, HTTPClientError) as exc:
            raise UnavailableError(f"The payload store is unavailable ({type(exc).__name__})") from exc
        self._remember(key, found)
        return found

    def _remember(self, key: str, payload_json: str) -> None:
        with self._lock:
            self._cache[key] = payload_json
            self._cache.move_to_end(key)
            while len(self._cache) > CACHED:
                self._cache.popitem(last=False)

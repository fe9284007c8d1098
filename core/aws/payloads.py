"""Large task payloads and outcomes in S3 (AWS only).

Above PAYLOAD_INLINE_LIMIT a task's payload is written once, at creation, to the payload bucket
(`payloads/<task id>.json`), and the task item holds a reference instead. The item then stays
small, and so does every write of it (DynamoDB bills a write by the item's size) and every index
entry that copies it.

A task's result and error, above the DynamoDB adapter's OUTCOME_INLINE_LIMIT, go to the same
bucket as one object when the task is released (`results/<task id>/<attempt>-<random>.json`),
before the transaction that finishes the task and stores the object's key. Every write has a key
of its own, so a duplicate or stale completion never overwrites the object the winning one
points at: the transaction's condition decides whose key the task keeps, and the loser's object
is an orphan the lifecycle rule removes.

An object never changes once written, so a container keeps the last few it read or wrote
(`CACHED`): the writes of one task's life that return the item (claim, release, callbacks) read
it at most once per container. The bucket's lifecycle rules (template.yaml: PayloadRetentionDays
for payloads, TaskTtlDays for results) remove objects after their tasks: an object is written
before the item that refers to it, so a failed write leaves at most an object that expires,
never a task pointing at nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import boto3
import msgspec
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
        self._put(key, payload_json)
        return key

    def get(self, key: str) -> str:
        """The payload's JSON; "{}" if it is gone (its task outlived PayloadRetentionDays)."""
        found = self._get(key)
        if found is None:
            log.warning("payload %s is gone: the task outlived the bucket's retention", key)
            return "{}"
        return found

    def put_outcome(self, task_id: str, attempt: int, fields: Mapping[str, str]) -> str:
        """Store a task's result and error (`fields`: name -> its JSON) under a key no other
        write uses; returns the reference the task item keeps."""
        key = f"results/{task_id}/{attempt}-{secrets.token_hex(8)}.json"
        self._put(key, "{" + ",".join(f'"{name}":{text}' for name, text in fields.items()) + "}")
        return key

    def get_outcome(self, key: str) -> dict[str, str]:
        """A stored result and error, name -> JSON; {} if the object is gone (its task is past
        its TTL, and DynamoDB has not removed the item yet)."""
        found = self._get(key)
        if found is None:
            log.warning("outcome %s is gone: its task is past its TTL", key)
            return {}
        fields = msgspec.json.decode(found, type=dict[str, msgspec.Raw])
        return {name: bytes(raw).decode() for name, raw in fields.items()}

    def _put(self, key: str, body: str) -> None:
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body.encode(), ContentType="application/json"
            )
        except (ClientError, ConnectionError, HTTPClientError) as exc:
            raise UnavailableError(f"The payload store is unavailable ({type(exc).__name__})") from exc
        self._remember(key, body)

    def _get(self, key: str) -> str | None:
        """The object's text; None if there is no such object."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            found = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise UnavailableError(f"The payload store is unavailable ({type(exc).__name__})") from exc
            return None
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

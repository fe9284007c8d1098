"""Idempotency keys in the table: pattern 18 of the access-pattern table."""

from __future__ import annotations

from botocore.exceptions import ClientError

from core.aws.dynamodb._requests import BUSY, CONDITION_FAILED, DynamoTable, code, old_item, translated_errors
from core.aws.dynamodb.items import TTL
from core.aws.dynamodb.keys import idempotency_key
from core.errors import UnavailableError
from core.ports.storage import IdempotencyRecord, IdempotencyStore


class DynamoIdempotencyStore(DynamoTable, IdempotencyStore):
    def put_idempotency(self, record: IdempotencyRecord, *, now_s: int) -> IdempotencyRecord | None:
        """Pattern 18. TTL deletes late (up to days), so an expired record may still be there:
        the condition treats it as absent."""
        item = idempotency_key(record.key)
        item |= {
            "body_hash": {"S": record.body_hash},
            "task_id": {"S": record.task_id},
            TTL: {"N": str(record.expires_at)},
        }
        for _ in range(3):
            with translated_errors():
                try:
                    self._client.put_item(
                        TableName=self.table_name,
                        Item=item,
                        ConditionExpression="attribute_not_exists(PK) OR #expires <= :now",
                        ExpressionAttributeNames={"#expires": TTL},
                        ExpressionAttributeValues={":now": {"N": str(now_s)}},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                    return None
                except ClientError as error:
                    if code(error) != CONDITION_FAILED:
                        raise
                    old = old_item(error) or self._get(idempotency_key(record.key))
            if old is not None:  # else it expired and went between the two requests
                return IdempotencyRecord(
                    key=record.key,
                    body_hash=old["body_hash"]["S"],
                    task_id=old["task_id"]["S"],
                    expires_at=int(old[TTL]["N"]),
                )
        raise UnavailableError(BUSY)

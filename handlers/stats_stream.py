"""The statistics Lambda, fed the table's DynamoDB stream (task items only, by the event
source mapping's filter): task changes in, statistics counters out (core/aws/stream.py).

A failure raises, so Lambda delivers the same batch again; it is then counted once.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from core.aws import stream
from core.aws.context import LazyContext
from handlers._lambda import build_context, instrumented, logger

context = LazyContext(build_context)


def _handle(event: dict[str, Any], lambda_context: LambdaContext) -> dict[str, int]:
    records = event.get("Records", [])
    counted = stream.count_statistics(context(), records)
    logger.info("stream batch counted", extra={"records": len(records), "counted": counted})
    return {"records": len(records), "counted": counted}


handler = instrumented(_handle)

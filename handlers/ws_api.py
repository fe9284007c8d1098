"""The WebSocket API's function: `$connect` (the token in the query string), `$disconnect`,
and the `subscribe`, `unsubscribe` and `$default` routes (RouteSelectionExpression
`$request.body.type`: a message of another type, or no JSON, lands on `$default` and gets the
error back). The work is in core.aws.update_push."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from aws_lambda_powertools.utilities.typing import LambdaContext

from core.aws import update_push
from core.errors import UnauthorizedError
from handlers._lambda import build_context, instrumented, logger

push = update_push.LazyPush(build_context)


def _handle(event: dict[str, Any], lambda_context: LambdaContext) -> dict[str, Any]:
    request = event["requestContext"]
    route, connection_id = request["routeKey"], request["connectionId"]
    logger.append_keys(route=route, connection_id=connection_id)
    channel = push(update_push.endpoint(request))
    if route == "$connect":
        query = event.get("queryStringParameters") or {}
        try:
            channel.connect(connection_id, query.get("token"))
        except UnauthorizedError as exc:
            refusal = {"error": "Unauthorized", "details": exc.details}
            return {"statusCode": 401, "body": msgspec.json.encode(refusal).decode()}
    elif route == "$disconnect":
        channel.disconnect(connection_id)
    else:
        body: str | None = event.get("body")
        if body is not None and event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        channel.receive(connection_id, body)
    return {"statusCode": 200}


handler = instrumented(_handle)

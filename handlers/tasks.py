"""Task routes: create, list, read, report (backend callback), retry, cancel, webhook deliveries,
streamed output (append, follow as Server-Sent Events)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from core.domain import prefer
from core.domain.schemas import AppendOutput, CreateTask, UpdateTask, decode
from core.errors import PayloadTooLargeError
from core.services import idempotency, output, task_listing, task_view, tasks, webhook_delivery
from handlers._http import authenticated, caller, json_response, lambda_app, path_id, read_body

# Not cached, not buffered by a proxy: each event is sent as it happens.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@authenticated
async def create_task(request: Request) -> Response:
    key = idempotency.check_key(request.headers.get(idempotency.HEADER))
    preferred_s = prefer.wait_seconds(request.headers.get("prefer"))
    body = decode(await read_body(request), CreateTask)
    ctx, who = caller(request)
    replayed = False
    if key is None:
        task = tasks.create_task(ctx, who, body)
    else:
        task, replayed = idempotency.create_task_once(ctx, who, body, key)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    if preferred_s is not None:
        applied_s = tasks.applied_wait_s(ctx, preferred_s)
        headers |= {"Preference-Applied": f"wait={applied_s}", "Vary": "Prefer"}
        return json_response(
            task_view.describe(ctx, await tasks.wait_finished(ctx, task, applied_s * 1000)), headers=headers
        )
    if not body.is_async:
        return json_response(task_view.describe(ctx, await tasks.wait_finished(ctx, task)), headers=headers)
    return json_response(
        {
            "id": task.id,
            "status": task.status.value,
            "createdAt": task.created_at,
            "updatedAt": task.updated_at,
        },
        headers=headers,
    )


@authenticated
async def list_tasks(request: Request) -> Response:
    query = request.query_params
    page = task_listing.list_tasks(
        *caller(request),
        status=query.get("status"),
        limit=query.get("limit"),
        cursor=query.get("cursor"),
    )
    return json_response(page)


@authenticated
async def get_task(request: Request) -> Response:
    ctx, who = caller(request)
    task = tasks.get_task(ctx, who, path_id(request, "id", "task"))
    return json_response(task_view.describe(ctx, task))


@authenticated
async def update_task(request: Request) -> Response:
    task_id = path_id(request, "id", "task")
    try:
        raw = await read_body(request)
    except PayloadTooLargeError:
        # A result over the maximum cannot be kept: the task fails saying so, rather than
        # wait for its timeout with the backend's work done and lost.
        tasks.refuse_oversized_report(*caller(request), task_id)
        raise
    body = decode(raw, UpdateTask)
    task = tasks.report(*caller(request), task_id, body)
    return json_response(task.to_api())


@authenticated
async def retry_task(request: Request) -> Response:
    task = tasks.retry_task(*caller(request), path_id(request, "id", "task"))
    return json_response({"message": "Task queued for retry", "taskId": task.id})


@authenticated
async def cancel_task(request: Request) -> Response:
    task = tasks.cancel_task(*caller(request), path_id(request, "id", "task"))
    return json_response({"message": "Task cancelled", "taskId": task.id})


@authenticated
async def append_output(request: Request) -> Response:
    task_id = path_id(request, "id", "task")
    body = decode(await read_body(request), AppendOutput)
    chunk = output.append(*caller(request), task_id, body.data)
    return json_response({"taskId": chunk.task_id, "index": chunk.index})


@authenticated
async def stream_task(request: Request) -> Response:
    ctx, who = caller(request)
    after = output.last_event_id(request.headers.get("last-event-id"))
    task = output.readable_task(ctx, who, path_id(request, "id", "task"))
    return StreamingResponse(
        output.events(ctx, task, after), media_type="text/event-stream", headers=SSE_HEADERS
    )


@authenticated
async def task_webhooks(request: Request) -> Response:
    task_id = path_id(request, "id", "task")
    task, deliveries = webhook_delivery.deliveries(*caller(request), task_id)
    return json_response(
        {"taskId": task.id, "webhook": task.webhook, "deliveries": [d.to_api() for d in deliveries]}
    )


routes = [
    Route("/api/task", create_task, methods=["POST"]),
    Route("/api/tasks", list_tasks, methods=["GET"]),
    Route("/api/task/{id}", get_task, methods=["GET"]),
    Route("/api/task/{id}", update_task, methods=["PUT"]),
    Route("/api/task/{id}/retry", retry_task, methods=["POST"]),
    Route("/api/task/{id}/cancel", cancel_task, methods=["POST"]),
    Route("/api/task/{id}/webhooks", task_webhooks, methods=["GET"]),
    Route("/api/task/{id}/output", append_output, methods=["POST"]),
    Route("/api/task/{id}/stream", stream_task, methods=["GET"]),
]

app, handler = lambda_app(routes)

"""GET /api/tasks and GET /api/stats/queue over HTTP, on both deployments: who sees which
tasks, pages and their cursors, the status filter, bad parameters, and the queue summary."""

from __future__ import annotations

from typing import Any

from .harness import Api


def pages(api: Api, token: str, query: str) -> list[list[dict[str, Any]]]:
    found: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        suffix = "" if cursor is None else f"&cursor={cursor}"
        body = api.get(f"/api/tasks?{query}{suffix}", token=token).ok()
        found.append(body["tasks"])
        cursor = body["nextCursor"]
        if cursor is None:
            return found


def test_a_user_lists_only_its_own_tasks_newest_first_a_page_at_a_time(api: Api) -> None:
    # GIVEN five tasks of one user and one of another
    user, other = api.user(), api.user()
    mine = [api.create_task(user, priority=i) for i in range(5)]
    theirs = api.create_task(other)

    # WHEN the user reads its tasks two at a time
    listed = pages(api, user, "limit=2")

    # THEN it gets exactly its own, newest first, in pages of 2, 2 and 1, as summaries
    assert [len(page) for page in listed] == [2, 2, 1]
    tasks = [task for page in listed for task in page]
    assert [t["id"] for t in tasks] == list(reversed(mine))
    assert theirs not in {t["id"] for t in tasks}
    assert {"payload", "result", "error"}.isdisjoint(tasks[0])
    assert tasks[0]["status"] == "PENDING" and tasks[0]["priority"] == 4


def test_an_admin_lists_everyones_tasks_and_filters_by_status(api: Api) -> None:
    # GIVEN a user's task cancelled, and another user's task waiting
    first, second = api.user(), api.user()
    cancelled = api.create_task(first)
    api.post(f"/api/task/{cancelled}/cancel", token=first).ok()
    waiting = api.create_task(second)

    # WHEN the admin lists the newest tasks, and then the CANCELLED ones
    newest = api.get("/api/tasks?limit=200", token=api.admin).ok()["tasks"]
    only_cancelled = api.get("/api/tasks?status=CANCELLED&limit=200", token=api.admin).ok()["tasks"]

    # THEN both users' tasks are there, the newest first; the filter keeps only the cancelled one
    ids = [t["id"] for t in newest]
    assert ids.index(waiting) < ids.index(cancelled)
    assert cancelled in {t["id"] for t in only_cancelled} and waiting not in {t["id"] for t in only_cancelled}
    assert {t["status"] for t in only_cancelled} == {"CANCELLED"}


def test_bad_parameters_are_400_naming_the_parameter(api: Api) -> None:
    user = api.user()
    for query, word in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        # Unicode digits: str.isdigit() says yes, int() says no (was a 500).
        ("limit=%C2%B2", "limit"),
        ("limit=%D9%A3", "limit"),
        ("limit=%EF%BC%95", "limit"),
        ("limit=+5", "limit"),
        ("status=DONE", "status"),
        ("cursor=%%%", "cursor"),
        ("cursor=MTIzI2Fi", "cursor"),  # base64 of "123#ab": not a position this API makes
    ]:
        api.get(f"/api/tasks?{query}", token=user).error(400, "Invalid request", mentions=word)
    api.get("/api/tasks").error(401, "Unauthorized")
    service = api.register_server()["token"]
    api.get("/api/tasks", token=service).error(403, "Forbidden")


def test_the_queue_summary_counts_the_backlog_per_priority(api: Api) -> None:
    # GIVEN the backlog as it is, then three more tasks held PENDING at priorities 9, 9 and 2
    user = api.user()
    before = api.get("/api/stats/queue", token=user).ok()
    counts = {p["priority"]: p["count"] for p in before["pendingByPriority"]}
    for priority in (9, 9, 2):
        api.create_task(user, priority=priority)

    # WHEN the summary is read again
    after = api.get("/api/stats/queue", token=user).ok()

    # THEN the backlog grew by three, two of them at priority 9, highest priority first
    assert after["pending"] == before["pending"] + 3
    grown = {p["priority"]: p["count"] for p in after["pendingByPriority"]}
    assert grown[9] == counts.get(9, 0) + 2 and grown[2] == counts.get(2, 0) + 1
    priorities = [p["priority"] for p in after["pendingByPriority"]]
    assert priorities == sorted(priorities, reverse=True)
    assert after["processing"] >= 0 and after["capacity"] >= 0

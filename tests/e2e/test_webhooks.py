"""Webhooks end to end: `taskgate serve`, a real backend and a real receiver process on
loopback. The receiver logs every request it gets; the tests check what it got against the
delivery record `GET /api/task/{id}/webhooks` shows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.domain.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.support.waiting import eventually

from .fleet import (
    CLI,
    FAST_TIMERS,
    Fleet,
    Gateway,
    Mock,
    _spawn,
    _stop,
    _wait_up,
    free_port,
    start_gateway,
)
from .harness import HELD, RATE_LIMITS_OFF, SECRET, Api, unique
from .webhook_receiver import Receiver, start_receiver

MAX_ATTEMPTS = 3
# Short backoffs: retries 50-100 ms, then 100-200 ms after the failures.
WEBHOOK_SETTINGS = {
    "WEBHOOK_MAX_ATTEMPTS": MAX_ATTEMPTS,
    "WEBHOOK_RETRY_BASE_DELAY": 100,
    "WEBHOOK_TIMEOUT": 2000,
    # The receivers are on loopback, which `taskgate serve` refuses unless the operator allows it.
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("webhooks"), spares=1, **WEBHOOK_SETTINGS) as started:
        yield started


@pytest.fixture(scope="module")
def webhook_secret(gateway: Gateway) -> str:
    """No WEBHOOK_SECRET is set: the one derived from the JWT secret, as the CLI prints it."""
    env = {**os.environ, "JWT_SECRET": SECRET}
    env.pop("WEBHOOK_SECRET", None)
    printed = subprocess.run([*CLI, "webhook-secret"], env=env, capture_output=True, text=True, check=True)
    return printed.stdout.strip()


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        _stop(receiver.proc)


def deliveries(api: Api, task_id: str, token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/api/task/{task_id}/webhooks", token=token or api.admin).ok()
    return body


def settled(api: Api, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The task's one delivery once it is delivered or failed."""
    found = eventually(
        lambda: deliveries(api, task_id)["deliveries"],
        lambda d: len(d) == 1 and d[0]["state"] != "pending",
        timeout=timeout,
        what=f"webhook of {task_id} settled",
    )
    delivery: dict[str, Any] = found[0]
    return delivery


def no_more_than_recorded(receiver: Receiver, delivery: dict[str, Any]) -> None:
    """A settled delivery is final: an attempt starts with a claim only a PENDING delivery
    grants, and the receiver logs a POST before it answers. So the POSTs it logged are all
    there will be, one per recorded attempt; no waiting can add to that."""
    assert delivery["state"] in ("delivered", "failed"), delivery
    assert len(receiver.requests()) == len(delivery["attempts"]), (receiver.requests(), delivery)


def held_task(api: Api, owner: str, webhook: str) -> str:
    """A task that no server takes; cancelling it finishes it."""
    body = {"type": "e2e-webhook", "priority": 1, "payload": {}, "capabilities": [HELD], "webhook": webhook}
    return str(api.post("/api/task", json=body, token=owner).ok()["id"])


def test_a_completed_task_is_posted_signed_with_its_get_body(
    gateway: Gateway, webhook_secret: str, receivers: list[Receiver], tmp_path: Path
) -> None:
    receiver = start_receiver(tmp_path)
    receivers.append(receiver)
    with Fleet(gateway) as fleet:
        fleet.add(Mock())
        task_id = fleet.submit(webhook=receiver.url)
        fleet.wait_terminal()
        (request,) = receiver.wait_requests(1)
        finished = fleet.task(task_id)

        headers = request["headers"]
        body = request["body"].encode()
        assert verify(
            webhook_secret,
            headers[TIMESTAMP_HEADER.lower()],
            body,
            headers[SIGNATURE_HEADER.lower()],
            time.time(),
        )
        assert not verify(
            webhook_secret + "x",
            headers[TIMESTAMP_HEADER.lower()],
            body,
            headers[SIGNATURE_HEADER.lower()],
            time.time(),
        )
        assert headers["content-type"] == "application/json"
        assert headers["x-taskgate-delivery"] == f"{task_id}.0"
        assert json.loads(body) == finished and finished["status"] == "COMPLETED"

        delivery = settled(fleet.api, task_id)
        assert (delivery["state"], delivery["taskStatus"], delivery["url"]) == (
            "delivered",
            "COMPLETED",
            receiver.url,
        )
        (attempt,) = delivery["attempts"]
        assert attempt["statusCode"] == 200 and attempt["error"] is None and attempt["nextRetryAt"] is None
        assert attempt["durationMs"] >= 0 and attempt["at"] >= finished["completedAt"]
        # The owner sees it too; another user does not learn the task exists.
        assert deliveries(fleet.api, task_id, fleet.owner)["webhook"] == receiver.url
        fleet.api.get(f"/api/task/{task_id}/webhooks", token=fleet.api.user()).error(404, "Not found")
        fleet.assert_settled()


def test_two_500s_then_200_make_three_recorded_attempts(
    gateway: Gateway, receivers: list[Receiver], tmp_path: Path
) -> None:
    receiver = start_receiver(tmp_path, "500,500,200")
    receivers.append(receiver)
    api, owner = gateway.api, gateway.api.user()
    task_id = held_task(api, owner, receiver.url)
    api.post(f"/api/task/{task_id}/cancel", token=owner).ok()

    delivery = settled(api, task_id)
    assert (delivery["state"], delivery["taskStatus"]) == ("delivered", "CANCELLED")
    assert [a["statusCode"] for a in delivery["attempts"]] == [500, 500, 200]
    first, second, third = delivery["attempts"]
    assert (
        first["nextRetryAt"] is not None
        and second["nextRetryAt"] is not None
        and third["nextRetryAt"] is None
    )
    assert second["at"] >= first["nextRetryAt"] and third["at"] >= second["nextRetryAt"]
    sent = receiver.wait_requests(3)
    assert len({r["body"] for r in sent}) == 1 and json.loads(sent[0]["body"])["status"] == "CANCELLED"
    assert {r["headers"]["x-taskgate-delivery"] for r in sent} == {f"{task_id}.0"}
    no_more_than_recorded(receiver, delivery)  # no fourth request


def test_a_400_is_not_retried(gateway: Gateway, receivers: list[Receiver], tmp_path: Path) -> None:
    receiver = start_receiver(tmp_path, "400,200")
    receivers.append(receiver)
    api, owner = gateway.api, gateway.api.user()
    task_id = held_task(api, owner, receiver.url)
    api.post(f"/api/task/{task_id}/cancel", token=owner).ok()

    delivery = settled(api, task_id)
    assert delivery["state"] == "failed"
    assert [(a["statusCode"], a["nextRetryAt"]) for a in delivery["attempts"]] == [(400, None)]
    no_more_than_recorded(receiver, delivery)  # no retry after a 400


def test_a_task_retried_and_finished_again_is_delivered_again(
    gateway: Gateway, receivers: list[Receiver], tmp_path: Path
) -> None:
    receiver = start_receiver(tmp_path)
    receivers.append(receiver)
    api, owner = gateway.api, gateway.api.user()
    task_id = held_task(api, owner, receiver.url)
    api.post(f"/api/task/{task_id}/cancel", token=owner).ok()
    receiver.wait_requests(1)
    api.post(f"/api/task/{task_id}/retry", token=owner).ok()
    api.post(f"/api/task/{task_id}/cancel", token=owner).ok()

    sent = receiver.wait_requests(2)
    assert [r["headers"]["x-taskgate-delivery"] for r in sent] == [f"{task_id}.0", f"{task_id}.1"]
    rounds = eventually(
        lambda: deliveries(api, task_id)["deliveries"],
        lambda d: [x["state"] for x in d] == ["delivered", "delivered"],
        timeout=5,
        what="both rounds delivered",
    )
    assert [d["id"] for d in rounds] == [f"{task_id}.0", f"{task_id}.1"]
    assert [len(d["attempts"]) for d in rounds] == [1, 1]
    assert len(receiver.requests()) == 2  # one POST per round: both rounds are final


def test_a_receiver_that_is_down_is_retried_up_to_the_limit(gateway: Gateway) -> None:
    api, owner = gateway.api, gateway.api.user()
    nobody = f"http://127.0.0.1:{free_port()}/hook"
    task_id = held_task(api, owner, nobody)
    api.post(f"/api/task/{task_id}/cancel", token=owner).ok()

    delivery = settled(api, task_id)
    assert delivery["state"] == "failed"
    attempts = delivery["attempts"]
    assert len(attempts) == MAX_ATTEMPTS
    assert all(a["statusCode"] is None and a["error"] for a in attempts), attempts
    assert [a["nextRetryAt"] is not None for a in attempts] == [True] * (MAX_ATTEMPTS - 1) + [False]
    assert delivery["nextAttemptAt"] is None


@pytest.mark.parametrize(
    ("webhook", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/hook", "metadata"),
        ("ftp://example.com/hook", "http and https"),
        ("http://user:pw@example.com/hook", "credentials"),
        ("not a url", "http and https"),
    ],
)
def test_bad_webhook_urls_are_400_and_store_nothing(gateway: Gateway, webhook: str, reason: str) -> None:
    api = gateway.api
    owner_sub = unique("user")
    owner = api.token("user", owner_sub)
    body = {"type": "e2e-webhook", "priority": 1, "payload": {}, "webhook": webhook}
    api.post("/api/task", json=body, token=owner).error(400, "Invalid request", mentions=("webhook", reason))
    assert gateway.store.tasks_by_owner(owner_sub) == []


def test_delivery_continues_after_a_restart_between_attempts(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    # GIVEN a gateway whose retries wait 1.5-3 s, and a receiver answering 500 then 200
    receiver = start_receiver(tmp_path, "500,200")
    receivers.append(receiver)
    port, db = free_port(), tmp_path / "restart.db"
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "JWT_SECRET": SECRET,
        **RATE_LIMITS_OFF,
        **FAST_TIMERS,
        "WEBHOOK_SECRET": "restart-secret",
        "WEBHOOK_RETRY_BASE_DELAY": "3000",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    command = [*CLI, "serve", "--db", str(db), "--port", str(port)]
    proc = _spawn(command, tmp_path / "first.log", env)
    try:
        _wait_up([(proc, base, tmp_path / "first.log")])
        with httpx.Client(base_url=base, timeout=10.0) as client:
            from core.local.sqlite import SqliteStore

            store = SqliteStore(str(db))
            api = Api("serve", client, store, SECRET)
            owner = api.user()
            task_id = held_task(api, owner, receiver.url)
            api.post(f"/api/task/{task_id}/cancel", token=owner).ok()
            receiver.wait_requests(1)
            first = eventually(
                lambda: deliveries(api, task_id)["deliveries"][0],
                lambda d: len(d["attempts"]) == 1,
                timeout=5,
                what="first attempt recorded",
            )
            assert first["attempts"][0]["statusCode"] == 500 and first["state"] == "pending"

            # WHEN the gateway is killed before the retry is due, and started again
            _stop(proc, signal.SIGKILL)
            assert len(receiver.requests()) == 1
            proc = _spawn(command, tmp_path / "second.log", env)
            _wait_up([(proc, base, tmp_path / "second.log")])

            # THEN the new process makes the retry, signed, and records it beside the first
            delivery = settled(api, task_id, timeout=10)
            store.close()
        assert delivery["state"] == "delivered"
        assert [a["statusCode"] for a in delivery["attempts"]] == [500, 200]
        retry = receiver.requests()[1]
        assert verify(
            "restart-secret",
            retry["headers"]["x-taskgate-timestamp"],
            retry["body"].encode(),
            retry["headers"]["x-taskgate-signature"],
            time.time(),
        )
        assert len(receiver.requests()) == 2
    finally:
        _stop(proc, signal.SIGTERM)

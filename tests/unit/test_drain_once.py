"""The messages of one dispatcher batch share one drain (core.aws.runtime.DrainOnce)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.aws.runtime import DrainOnce
from core.errors import UnavailableError


def test_ten_messages_of_a_batch_drain_once() -> None:
    # GIVEN one batch's ten messages handled at once, the first drain held until all have come
    drains, calls, arrived = DrainOnce(), [], threading.Barrier(10, timeout=5)

    def drain() -> None:
        calls.append(1)

    def message() -> None:
        arrived.wait()
        drains.run(drain)

    # WHEN they all run
    with ThreadPoolExecutor(max_workers=10) as pool:
        for future in [pool.submit(message) for _ in range(10)]:
            future.result()
    # THEN the queue was drained once, for all of them
    assert calls == [1]


def test_a_failed_drain_fails_every_message_that_shared_it() -> None:
    # GIVEN a drain that meets a store fault
    drains = DrainOnce()

    def drain() -> None:
        raise UnavailableError("throttled")

    # THEN the first message and every later one of the batch raise it (SQS delivers each again)
    for _ in range(3):
        with pytest.raises(UnavailableError):
            drains.run(drain)

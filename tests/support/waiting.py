"""Waiting in tests, in one place: read until a condition holds, within a deadline, and on
failure say what was awaited and what was last seen.

These wait for something to happen. A test that must show something did NOT happen does not
sleep and look: it waits for an event that could only come after it (a drain that has seen
the task, a record that is final, a later message on the same connection) or drives a fake
clock (tests/unit/services).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Hashable
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

POLL_S = 0.02


def eventually(
    read: Callable[[], T],
    until: Callable[[T], object] = bool,
    *,
    timeout: float = 5.0,
    what: str = "",
    interval: float = POLL_S,
) -> T:
    """`read()` until `until(value)` is true; returns that value. Fails after `timeout` s,
    naming `what` and the last value. An exception from `read` (a process that died) ends
    the wait at once."""
    deadline = time.monotonic() + timeout
    while not until(value := read()):
        assert time.monotonic() < deadline, (
            f"{what or 'condition'}: not within {timeout} s; last seen {value!r}"
        )
        time.sleep(interval)
    return value


def each_eventually(
    keys: Collection[K],
    read: Callable[[K], T],
    until: Callable[[T], object],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    describe: Callable[[dict[K, T]], object] = lambda pending: pending,
) -> dict[K, T]:
    """`read(key)` for every key until each value satisfies `until`; only the keys not yet
    done are read again (reading a thousand tasks every round would be the slow part).
    Returns the values that satisfied it. On failure, `describe` sums up a few stragglers."""
    waiting = list(keys)
    done: dict[K, T] = {}
    deadline = time.monotonic() + timeout
    while True:
        last: dict[K, T] = {}
        for key in waiting:
            value = read(key)
            if until(value):
                done[key] = value
            else:
                last[key] = value
        waiting = list(last)
        if not waiting:
            return done
        stragglers = dict(list(last.items())[:5])
        assert time.monotonic() < deadline, (
            f"{len(waiting)} of {len(keys)} not {what} within {timeout} s: {describe(stragglers)!r}"
        )
        time.sleep(interval)


async def eventually_async(
    read: Callable[[], T],
    until: Callable[[T], object] = bool,
    *,
    timeout: float = 5.0,
    what: str = "",
    interval: float = POLL_S,
) -> T:
    """`eventually` inside an event loop: the loop keeps running (timers fire) meanwhile."""
    deadline = time.monotonic() + timeout
    while not until(value := read()):
        assert time.monotonic() < deadline, (
            f"{what or 'condition'}: not within {timeout} s; last seen {value!r}"
        )
        await asyncio.sleep(interval)
    return value

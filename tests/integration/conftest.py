"""Lambda entry points run here as in a fresh Lambda process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def lambda_event_loop() -> Iterator[None]:
    """A Lambda process's main thread has an event loop for Mangum to use; earlier tests in
    this pytest process may have closed the thread's loop (asyncio.run does)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()

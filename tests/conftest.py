"""Options for the whole suite (pytest reads `pytest_addoption` only from the first conftests)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="tests/reliability at full scale (the issue's numbers); also TASKGATE_LONG=1",
    )

"""Markers of the fault tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers used here."""
    config.addinivalue_line("markers", "no_redis_persistence: the test's own Redis runs without an AOF")

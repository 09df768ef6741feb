"""Helpers for tests that need a real PostgreSQL or Redis.

On a laptop without the service the test is skipped with the reason; with RELAYDESK_REQUIRE_SERVICES=1
(as .ci/run sets) a missing service fails the test instead.
"""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_URL = os.environ.get("RELAYDESK_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("RELAYDESK_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, under RELAYDESK_REQUIRE_SERVICES=1, fail) unless ``host:port`` accepts connections."""
    if _reachable(host, port):
        return
    reason = f"{name} is not running on {host}:{port} (start it, or see README: Running the tests)"
    if os.environ.get("RELAYDESK_REQUIRE_SERVICES") == "1":
        pytest.fail(f"RELAYDESK_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def require_postgres() -> str:
    """The PostgreSQL URL for tests, after checking the server is up."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


def require_redis() -> str:
    """The Redis URL for tests, after checking the server is up."""
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL

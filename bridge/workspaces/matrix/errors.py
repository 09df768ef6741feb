"""Turning matrix-nio error responses into the outbox's delivery errors."""

from __future__ import annotations

from typing import Any

from bot_core.api import RetryAfter, TemporaryFailure


class MatrixError(TemporaryFailure):
    """A Matrix API call failed (the outbox retries it)."""


def check_response(response: Any, what: str) -> Any:
    """Raise the outbox's errors for a nio error response; pass other responses through."""
    if hasattr(response, "status_code") and getattr(response, "status_code", None):
        if response.status_code == "M_LIMIT_EXCEEDED":
            raise RetryAfter(
                (getattr(response, "retry_after_ms", None) or 1000) / 1000, f"{what}: rate limited"
            )
        raise MatrixError(f"{what}: {response.status_code} {getattr(response, 'message', '')}")
    if type(response).__name__.endswith("Error"):
        raise MatrixError(f"{what}: {getattr(response, 'message', response)}")
    return response

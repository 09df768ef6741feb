"""Bot API failures (aiogram's exceptions) as the outbox's errors, with the bot token scrubbed out.

The token is part of every Bot API URL, so any text that may quote a URL (an aiohttp error, a
description) goes through :class:`Scrubber` before it is logged, stored or shown in a room.
"""

from __future__ import annotations

from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
)

from bot_core.api import DeliveryError, RetryAfter, TemporaryFailure, Undeliverable

# 400s that mean the customer's chat is gone for good: later replies are not attempted
UNREACHABLE_400 = ("chat not found", "user not found", "peer_id_invalid", "user is deactivated")


class Scrubber:
    """Replaces the bot token (and its numeric-less secret half) in any text with ``***``."""

    def __init__(self, token: str) -> None:
        self._secrets = [s for s in (token, token.partition(":")[2]) if len(s) >= 6]

    def __call__(self, text: str) -> str:
        """``text`` without the token."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def describe(exc: BaseException, scrub: Scrubber) -> str:
    """A short, token-free description of ``exc`` for logs, the outbox and room notices."""
    if isinstance(exc, TelegramAPIError):
        return scrub(f"Telegram: {exc.message}")
    return scrub(f"{type(exc).__name__}: {exc}")


def delivery_error(exc: Exception, scrub: Scrubber) -> DeliveryError:
    """The outbox error for a failed Bot API call."""
    reason = describe(exc, scrub)
    if isinstance(exc, TelegramRetryAfter):
        return RetryAfter(float(exc.retry_after), reason)
    if isinstance(exc, TelegramForbiddenError):  # blocked, deactivated, never started the bot
        return Undeliverable(reason, unreachable=True)
    if isinstance(exc, TelegramMigrateToChat | TelegramEntityTooLarge):
        return Undeliverable(reason)
    if isinstance(exc, TelegramBadRequest):
        lowered = exc.message.lower()
        return Undeliverable(reason, unreachable=any(p in lowered for p in UNREACHABLE_400))
    if isinstance(exc, TelegramNotFound):
        return Undeliverable(reason)
    if isinstance(exc, TelegramNetworkError | TelegramAPIError):
        return TemporaryFailure(reason)  # 5xx, 401/409 (a configuration problem worth retrying), timeouts
    return TemporaryFailure(reason)

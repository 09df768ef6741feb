"""Long polling with an offset that only moves past updates that are stored.

``getUpdates(offset)`` confirms to Telegram every update below ``offset``. The next offset is computed
only from updates that were handed to the bus (whose ``inbound`` returned) and is saved in the plugin's
state before the next call: after a crash or a restart polling resumes exactly there, so an update is
neither lost (it is confirmed only once stored) nor handled twice (a stored one is never asked for
again, and the engine's receipts drop a replay anyway).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramRetryAfter
from aiogram.types import Update

from bot_core.context import StateStore
from bot_core.desk import NotAccepting
from bridge.channels.telegram.errors import Scrubber, describe

OFFSET_KEY = "poll_offset"
ALLOWED_UPDATES = ["message", "edited_message"]
MAX_BACKOFF = 30.0


class Poller:
    """Calls ``getUpdates`` in a loop and hands each update to ``handle`` in order."""

    def __init__(
        self,
        bot: Bot,
        handle: Callable[[Update], Awaitable[None]],
        state: StateStore,
        log: logging.Logger,
        scrub: Scrubber,
        *,
        timeout: int = 30,
    ) -> None:
        self._bot = bot
        self._handle = handle
        self._state = state
        self._log = log
        self._scrub = scrub
        self._timeout = timeout
        self._failures = 0

    async def run(self) -> None:
        """Poll until cancelled, or until the desk stops accepting events."""
        offset: int | None = await self._state.get(OFFSET_KEY)
        self._log.info("telegram polling", extra={"offset": offset})
        while True:
            try:
                updates = await self._bot.get_updates(
                    offset=offset,
                    timeout=self._timeout,
                    allowed_updates=ALLOWED_UPDATES,
                    request_timeout=self._timeout + 15,
                )
            except TelegramRetryAfter as exc:
                await asyncio.sleep(exc.retry_after)
                continue
            except (TelegramAPIError, TelegramNetworkError) as exc:
                await self._back_off("getUpdates failed", exc)
                continue
            self._failures = 0
            reached = offset
            try:
                for update in updates:
                    await self._handle(update)
                    reached = update.update_id + 1
            except NotAccepting:
                return  # shutting down: what was not stored stays unconfirmed at Telegram
            except Exception as exc:
                await self._back_off("a telegram update could not be stored", exc)
            finally:
                if reached != offset:
                    await self._state.set(OFFSET_KEY, reached)
                    offset = reached

    async def _back_off(self, what: str, exc: BaseException) -> None:
        self._failures += 1
        delay = min(MAX_BACKOFF, 0.5 * 2 ** min(self._failures, 6)) * random.uniform(0.8, 1.2)
        self._log.warning(what, extra={"error": describe(exc, self._scrub), "retry_in_s": round(delay, 2)})
        await asyncio.sleep(delay)

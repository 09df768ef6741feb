"""Long polling with an offset that only moves past updates that are stored.

``getUpdates(offset)`` confirms to Telegram every update below ``offset``. The next offset is computed
only from updates that were handed to the bus (whose ``inbound`` returned) and is saved in the plugin's
state before the next call: after a crash or a restart polling resumes exactly there, so an update is
neither lost (it is confirmed only once stored) nor handled twice (a stored one is never asked for
again, and the engine's receipts drop a replay anyway).

The loop runs under the desk's supervision (:class:`bot_core.receiving.ReceiveLoop`): any failure (an
API error, the network, an answer that is not JSON such as a proxy's HTML 502 page, the database while
saving the offset) is logged and retried after a capped backoff, and shows on ``/healthz`` when it lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiogram import Bot
from aiogram.exceptions import TelegramConflictError, TelegramRetryAfter
from aiogram.types import Update

from bot_core.api import NotAccepting, ReceiveLoop, StateStore
from bridge.channels.telegram.errors import Scrubber, describe

OFFSET_KEY = "poll_offset"
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
NOT_ACCEPTING_WAIT = 0.2  # the desk is stopping: the loop is about to be cancelled


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

    def describe(self, exc: BaseException) -> str:
        """A short, token-free description of a failure (the token is part of every Bot API URL); an
        answer that was not JSON (aiogram quotes it whole) is cut short, on one line."""
        return " ".join(describe(exc, self._scrub).split())[:300]

    async def run(self, loop: ReceiveLoop) -> None:
        """Poll until cancelled, reporting each round to ``loop`` (which waits the backoff on failures)."""
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
                await loop.failed("getUpdates rate limited", self.describe(exc), wait=exc.retry_after)
                continue
            except TelegramConflictError as exc:
                if "webhook" in exc.message.lower():  # left set (deleteWebhook failed at start): drop it
                    with contextlib.suppress(Exception):
                        await self._bot.delete_webhook(drop_pending_updates=False)
                await loop.failed("getUpdates failed", self.describe(exc))
                continue
            except Exception as exc:  # API errors, network, and answers that are not JSON (ClientDecodeError)
                await loop.failed("getUpdates failed", self.describe(exc))
                continue
            reached = offset
            stopping = False
            failure: Exception | None = None
            try:
                for update in updates:
                    await self._handle(update)
                    reached = update.update_id + 1
            except NotAccepting:
                stopping = True  # what was not stored stays unconfirmed at Telegram
            except Exception as exc:
                failure = exc
            if reached != offset:
                try:
                    await self._state.set(OFFSET_KEY, reached)
                except Exception as exc:  # the updates are stored: the next poll confirms them anyway
                    failure = failure or exc
                offset = reached
            if failure is not None:
                await loop.failed("a telegram update could not be stored", self.describe(failure))
            elif stopping:
                await asyncio.sleep(NOT_ACCEPTING_WAIT)  # the desk is stopping; this loop is cancelled soon
            else:
                loop.ok()

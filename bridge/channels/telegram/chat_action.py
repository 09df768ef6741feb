"""The "typing…" indicator while an agent types: Telegram shows a chat action for about 5 seconds,
so it is sent again every few seconds until the agent stops, a message goes out, or a time limit.
"""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot
from aiogram.enums import ChatAction

from bridge.channels.telegram.errors import Scrubber, describe

REFRESH_SECONDS = 4.5
MAX_SECONDS = 60.0  # an agent who walked away mid-sentence does not keep the customer watching forever


class TypingIndicator:
    """One refresher task per chat while its agent types; best effort (failures are only logged)."""

    def __init__(self, bot: Bot, log: logging.Logger, scrub: Scrubber) -> None:
        self._bot = bot
        self._log = log
        self._scrub = scrub
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def set(self, chat_id: int, active: bool) -> None:
        """Start (or keep) showing "typing…" in ``chat_id``, or stop refreshing it."""
        if not active:
            self.stop(chat_id)
            return
        task = self._tasks.get(chat_id)
        if task is not None and not task.done():
            task.cancel()  # restart the time limit
        self._tasks[chat_id] = asyncio.create_task(self._refresh(chat_id), name=f"telegram-typing-{chat_id}")

    def stop(self, chat_id: int) -> None:
        """Stop refreshing (a sent message clears the indicator on the customer's screen by itself)."""
        task = self._tasks.pop(chat_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop every refresher."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _refresh(self, chat_id: int) -> None:
        deadline = asyncio.get_running_loop().time() + MAX_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            try:
                await self._bot.send_chat_action(chat_id, ChatAction.TYPING, request_timeout=10)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a chat action is cosmetic: never an error worth more than a line
                self._log.info("telegram typing action failed", extra={"error": describe(exc, self._scrub)})
                return
            await asyncio.sleep(REFRESH_SECONDS)
        if self._tasks.get(chat_id) is asyncio.current_task():
            del self._tasks[chat_id]

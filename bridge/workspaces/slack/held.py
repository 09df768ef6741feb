"""The undo window: an agent's reply held for a few seconds before it goes to the customer.

Chosen design: the adapter holds the reply, not the outbox. The Slack event is acknowledged only once
the reply is stored in the plugin's state (``held`` scope, with its release time), so nothing is lost;
when the window ends it is handed to ``services.inbound`` (and from there, as every reply, to the
outbox), then forgotten. Undo (the button) or deleting the message inside the window removes it from
the state, and the customer never gets it; an edit inside the window changes the held text. Held
replies outlive a restart: :meth:`HeldReplies.resume` re-arms them at start (one overdue is released at
once). The core never sees an undone reply, so neither its log nor the customer does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot_core.api import AgentMessage, NotAccepting, StateStore

RETRY_SECONDS = 1.0


class HeldReplies:
    """Replies waiting out their undo window (``release`` hands one to the desk)."""

    def __init__(
        self, store: StateStore, release: Callable[[AgentMessage], Awaitable[None]], log: logging.Logger
    ) -> None:
        self._store = store
        self._release = release
        self._log = log
        self._lock = asyncio.Lock()
        self._timers: dict[str, asyncio.Task[None]] = {}

    async def hold(self, message: AgentMessage, seconds: float, agent: str) -> None:
        """Store ``message`` (returns once it is stored) and release it after ``seconds``."""
        key = message.external_message_id
        value = {
            "event": message.model_dump(mode="json"),
            "release_at": time.time() + seconds,
            "agent": agent,
        }
        async with self._lock:
            await self._store.set(key, value)
        self._arm(key, seconds)

    async def cancel(self, message_id: str, agent: str | None = None) -> bool:
        """Undo: forget the held reply (only its author may, when ``agent`` is given); False if it is gone."""
        async with self._lock:
            value = await self._store.get(message_id)
            if value is None or (agent is not None and value.get("agent") != agent):
                return False
            await self._store.delete(message_id)
        timer = self._timers.pop(message_id, None)
        if timer is not None:
            timer.cancel()
        self._log.info("held reply undone", extra={"message": message_id})
        return True

    async def edit(self, message_id: str, text: str) -> bool:
        """The agent edited a held reply: the customer gets the new text. False if it is not held."""
        async with self._lock:
            value = await self._store.get(message_id)
            if value is None:
                return False
            value["event"]["text"] = text
            await self._store.set(message_id, value)
        return True

    async def resume(self) -> None:
        """Re-arm the replies a previous process held (after a restart)."""
        now = time.time()
        for key, value in (await self._store.items()).items():
            self._arm(key, max(0.0, float(value.get("release_at", now)) - now))

    def _arm(self, key: str, delay: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = asyncio.create_task(self._after(key, delay))

    async def _after(self, key: str, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            try:
                async with self._lock:
                    value: dict[str, Any] | None = await self._store.get(key)
                    if value is None:
                        break
                    await self._release(AgentMessage.model_validate(value["event"]))
                    await self._store.delete(key)
                break
            except NotAccepting:
                break  # shutting down: the next start releases it
            except Exception:
                self._log.warning("releasing a held reply failed; retrying", exc_info=True)
                await asyncio.sleep(RETRY_SECONDS)
        self._timers.pop(key, None)

    async def close(self) -> None:
        """Stop the timers (what is held stays stored for the next start)."""
        timers = list(self._timers.values())
        self._timers.clear()
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

"""Agents typing in portal rooms, reported to the customer's channel (both workspace modes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any


class TypingRelay:
    """Turns ``m.typing`` snapshots (who types in a room now) into started/stopped reports per agent.

    ``report(room_id, agent_name, active)`` is the desk's ``agent_typing`` service; it runs in the
    background so that a slow channel never holds up the homeserver's push or the sync loop.
    """

    def __init__(
        self, report: Callable[[str, str, bool], Awaitable[None]], is_ours: Callable[[str], bool]
    ) -> None:
        self._report = report
        self._is_ours = is_ours
        self._typing: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def seen(self, room_id: str, user_ids: Iterable[str]) -> None:
        """The room's current typers: report who started and who stopped since the last snapshot."""
        now = {user for user in user_ids if not self._is_ours(user)}
        before = self._typing.get(room_id, set())
        if now:
            self._typing[room_id] = now
        else:
            self._typing.pop(room_id, None)
        for user in sorted(now - before):
            self._spawn(room_id, user, True)
        for user in sorted(before - now):
            self._spawn(room_id, user, False)

    def event(self, event: dict[str, Any], room_id: str | None = None) -> None:
        """Take an ephemeral event (``room_id`` when the event does not carry it); others are ignored."""
        if event.get("type") != "m.typing":
            return
        room = room_id or event.get("room_id")
        user_ids = (event.get("content") or {}).get("user_ids")
        if isinstance(room, str) and isinstance(user_ids, list):
            self.seen(room, [str(u) for u in user_ids])

    def _spawn(self, room_id: str, user_id: str, active: bool) -> None:
        name = user_id.split(":", 1)[0].lstrip("@")
        task: asyncio.Task[None] = asyncio.ensure_future(self._report(room_id, name, active))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for the reports still running."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

"""A pytest plugin for plugin authors: the ``relaydesk`` fixture starts a real desk around your plugins.

Installed with relaydesk (the ``pytest11`` entry point ``relaydesk``), so a plugin's test suite just asks
for the fixture (it needs pytest-asyncio). The desk runs on a fresh SQLite database in the test's
``tmp_path`` with the in-memory doubles of :mod:`bot_core.testing` as its channel (``customers``) and
workspace (``desk``), then your plugins in the order given::

    async def test_hours(relaydesk):
        desk = await relaydesk.start(OpeningHours, opening_hours={"hours": "9-17"})
        await desk.customer_writes("when are you open?")
        assert await desk.replies() == ["We are open 9-17."]

Every desk still running is stopped when the test ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest_asyncio

if TYPE_CHECKING:
    from bot_core.desk import Desk
    from bot_core.plugin import Plugin
    from bot_core.testing import MemoryChannel, MemoryWorkspace, RoomPost


@dataclass
class PluginDesk:
    """A running desk for a plugin test: the channel and workspace doubles, and your plugins."""

    desk: Desk
    channel: MemoryChannel
    workspace: MemoryWorkspace

    def plugin(self, name: str) -> Plugin:
        """The running plugin instance called ``name`` in the desk's plugins.yaml."""
        return self.desk.plugins[name]

    async def customer_writes(self, text: str, *, user: str = "customer", settle: bool = True) -> str:
        """The customer ``user`` writes ``text``; by default waits until relaydesk handled it all."""
        message_id = await self.channel.customer_writes(user, text)
        if settle:
            await self.settled()
        return message_id

    async def agent_writes(self, text: str, *, user: str = "customer", settle: bool = True) -> str:
        """An agent answers in ``user``'s room (the customer must have written first)."""
        room_id = next(
            room.room_id
            for room in self.workspace.rooms.values()
            if room.conversation.external_user_id == user
        )
        message_id = await self.workspace.agent_writes(room_id, text)
        if settle:
            await self.settled()
        return message_id

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until every event is handled and every outbound message is sent or given up."""
        if not await self.desk.wait_settled(timeout):
            raise TimeoutError(f"relaydesk did not settle in {timeout}s")

    async def replies(self, user: str = "customer") -> list[str]:
        """The texts sent to the customer ``user`` so far, in order."""
        await self.settled()
        return [d.text for d in self.channel.sent.items if d.external_user_id == user]

    def room_posts(self, user: str = "customer") -> list[RoomPost]:
        """What ``user``'s room shows: customer messages, notices, the card."""
        return [
            post
            for room in self.workspace.rooms.values()
            if room.conversation.external_user_id == user
            for post in room.posts
        ]


@dataclass
class DeskStarter:
    """What the ``relaydesk`` fixture gives a test: :meth:`start` makes a desk."""

    tmp_path: Path
    running: list[Desk] = field(default_factory=list)

    async def start(self, *plugins: type[Plugin] | str, **settings: Mapping[str, Any]) -> PluginDesk:
        """Start a desk with the doubles, then ``plugins`` (classes, or registered names like ``"faq"``).

        ``settings`` are each plugin's settings by its name (``opening_hours={"hours": "9-17"}``).
        """
        from bot_core.config import parse_config
        from bot_core.desk import Desk
        from bot_core.outbox import OutboxSettings
        from bot_core.testing import MemoryChannel, MemoryWorkspace
        from storage.db import migrate

        entries: list[dict[str, Any]] = [
            {"customers": {"use": "bot_core.testing:MemoryChannel"}},
            {"desk": {"use": "bot_core.testing:MemoryWorkspace"}},
        ]
        for plugin in plugins:
            if isinstance(plugin, str):
                entries.append({plugin: dict(settings.get(plugin, {}))})
            else:
                ref = f"{plugin.__module__}:{plugin.__qualname__}"
                entries.append({plugin.name: {"use": ref, "config": dict(settings.get(plugin.name, {}))}})
        database = self.tmp_path / f"relaydesk-{len(self.running)}.db"
        url = f"sqlite://{database}"
        await migrate(url)
        document = {
            "server": {"host": "127.0.0.1", "port": 0},
            "storage": {"database": url},
            "plugins": entries,
        }
        config = parse_config(json.dumps(document), "plugins.yaml", environ={})
        fast = OutboxSettings(base_backoff=0.02, max_backoff=0.2, poll_interval=0.2, retry_window=5.0)
        desk = Desk(config, outbox_settings=fast, scheduler_poll=0.1)
        await desk.start()
        self.running.append(desk)
        return PluginDesk(
            desk, cast(MemoryChannel, desk.plugins["customers"]), cast(MemoryWorkspace, desk.plugins["desk"])
        )

    async def stop_all(self) -> None:
        """Stop every desk still running."""
        for desk in self.running:
            if desk.plugins:
                await desk.stop(timeout=5)
        self.running.clear()


@pytest_asyncio.fixture
async def relaydesk(tmp_path: Path) -> AsyncIterator[DeskStarter]:
    """Start real desks around your plugins: ``desk = await relaydesk.start(MyPlugin)``."""
    starter = DeskStarter(tmp_path)
    yield starter
    await starter.stop_all()

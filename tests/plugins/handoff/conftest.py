"""A desk with the memory doubles, the handoff plugin (and the FAQ before it hands over), on a clock the test sets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from bot_core.desk import Desk
from bot_core.testing import MemoryChannel, MemoryWorkspace
from plugins.handoff import HandoffPlugin
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DOUBLES_YAML, DeskFactory

SAMPLE_KB = Path(__file__).resolve().parents[3] / "plugins" / "faq" / "examples" / "shop.yaml"

# a Tuesday, 10:00 in Berlin (winter time, UTC+1)
T0 = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


class Clock:
    """The time the test says it is (the desk's scheduler clock and the plugin's ``services.now``)."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def move(self, **delta: float) -> datetime:
        """Move the clock forward."""
        self.at += timedelta(**delta)
        return self.at


def handoff_yaml(settings: str, *, faq: bool = True) -> str:
    """plugins.yaml: the doubles, handoff (its settings indented 6 under ``config:``), then the FAQ."""
    text = DOUBLES_YAML + '  - handoff:\n      use: "plugins.handoff:HandoffPlugin"\n      config:\n'
    text += "".join(f"        {line}\n" for line in settings.strip("\n").splitlines())
    if faq:
        text += f'  - faq:\n      knowledge_base: "{SAMPLE_KB}"\n'
    return text


class Desk2:
    """A running desk with helpers to act as customers and agents and read what they see."""

    def __init__(self, desk: Desk, clock: Clock) -> None:
        self.desk = desk
        self.clock = clock
        self.channel: MemoryChannel
        self.workspace: MemoryWorkspace
        self.channel, self.workspace = doubles(desk)

    @property
    def plugin(self) -> HandoffPlugin:
        """The handoff plugin."""
        return cast(HandoffPlugin, self.desk.plugins["handoff"])

    async def settle(self) -> None:
        """Wait until every event is handled and every delivery sent."""
        assert await self.desk.wait_settled(15)

    async def says(self, user: str, text: str, **extra: Any) -> None:
        """Customer ``user`` writes ``text`` (``extra``: more CustomerMessage fields)."""
        await self.channel.customer_writes(user, text, **extra)
        await self.settle()

    def room(self, user: str) -> str:
        """The room id of ``user``'s conversation."""
        return self.workspace.room_of(user).room_id

    async def agent(self, user: str, text: str, agent: str = "@alice:example.org") -> None:
        """``agent`` writes ``text`` (a command or an answer) in ``user``'s room."""
        await self.workspace.agent_writes(self.room(user), text, agent=agent)
        await self.settle()

    def notices(self, user: str) -> list[str]:
        """The notices in ``user``'s room."""
        return self.workspace.texts(self.room(user), "notice")

    def got(self, user: str) -> list[str]:
        """What ``user`` received."""
        return self.channel.texts_to(user)

    def ops(self, team: str) -> list[str]:
        """What the team's ops room got."""
        return self.workspace.channels.get(f"ops-{team}", [])

    async def tick(self, **delta: float) -> None:
        """Move the clock and let the scheduler fire what came due."""
        self.clock.move(**delta)
        await self.desk.scheduler.tick()
        await self.settle()


StartDesk = Callable[..., Awaitable[Desk2]]


@pytest.fixture
def handoff_desk(database_url: str, make_desk: DeskFactory) -> StartDesk:
    """Start a desk with ``settings`` for handoff on the test's database (SQLite, and PostgreSQL) and ``clock``."""

    async def start(settings: str, *, clock: Clock | None = None, faq: bool = True) -> Desk2:
        clock = clock or Clock()
        desk = await make_desk(
            database_url, handoff_yaml(settings, faq=faq), scheduler_clock=clock, scheduler_poll=3600
        )
        await asyncio.wait_for(desk.scheduler.first_scan_done.wait(), 10)
        return Desk2(desk, clock)

    return start

"""A desk with the Slack workspace against the Slack emulator (real HTTP, real signatures)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest

from bot_core.desk import Desk
from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.devserver import free_port
from bridge.workspaces.slack import SlackWorkspace
from tests.conftest import DeskFactory
from tests.emulators.slack import SlackEmulator

ANN, BOB, EVE = "U0ANN", "U0BOB", "U0EVE"  # Ann is a listed agent, Bob is in the agent group, Eve is neither
GROUP = "S0AGENTS"


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    """The emulator with three people: two agents (one listed, one through the user group) and Eve."""
    emulator = SlackEmulator()
    emulator.add_user(ANN, "ann", real_name="Ann Agent")
    emulator.add_user(BOB, "bob", real_name="Bob Agent")
    emulator.add_user(EVE, "eve", real_name="Eve Else")
    emulator.add_usergroup(GROUP, [BOB])
    await emulator.start()
    yield emulator
    await emulator.idle()
    await emulator.stop()


def slack_yaml(emulator: SlackEmulator, extra: str = "", *, channel: str = "") -> str:
    """plugins.yaml: MemoryChannel customers and the Slack workspace (secrets from the environment)."""
    customers = channel or '{use: "bot_core.testing:MemoryChannel"}'
    return f"""
plugins:
  - customers: {customers}
  - slack:
      use: "bridge.workspaces.slack:SlackWorkspace"
      config:
        bot_token: "${{SLACK_BOT_TOKEN}}"
        signing_secret: "${{SLACK_SIGNING_SECRET}}"
        api_url: "{emulator.api_url}"
        agents: ["{ANN}"]
        agent_group: "{GROUP}"
        teams: [billing, sales]
        {extra}
"""


@dataclass
class SlackDesk:
    """A running desk, its customer channel and its Slack workspace."""

    desk: Desk
    customers: MemoryChannel
    workspace: SlackWorkspace
    slack: SlackEmulator


SlackDeskFactory = Callable[..., Awaitable[SlackDesk]]


@pytest.fixture
async def slack_desk(slack: SlackEmulator, sqlite_url: str, make_desk: DeskFactory) -> SlackDeskFactory:
    """Start a desk with the Slack workspace (``extra``: more config lines, e.g. ``undo_seconds: 0``).

    ``slack`` comes before ``make_desk``: the desks stop before the emulator does, as relaydesk stops
    while Slack stays up (stopped the other way round, each desk's last deliveries fail until it stops).
    """

    async def factory(extra: str = "undo_seconds: 0", *, url: str = "", channel: str = "") -> SlackDesk:
        port = free_port()
        desk = await make_desk(
            url or sqlite_url,
            slack_yaml(slack, extra, channel=channel),
            serve_http=True,
            http_port=port,
            environ={
                "SLACK_BOT_TOKEN": slack.token,
                "SLACK_SIGNING_SECRET": slack.signing_secret,
                "SLACK_APP_TOKEN": slack.app_token,
            },
        )
        slack.request_url = f"http://127.0.0.1:{port}/slack/events"
        customers = cast(MemoryChannel, desk.plugins["customers"])
        return SlackDesk(desk, customers, cast(SlackWorkspace, desk.plugins["slack"]), slack)

    return factory


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)

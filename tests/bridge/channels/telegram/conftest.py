"""Fixtures of the Telegram channel tests: a fresh Bot API emulator per test and desk configs using it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from bot_core.desk import Desk
from bot_core.receiving import ReceiveSettings
from bot_core.testing import MemoryWorkspace
from bridge.channels.telegram import TelegramChannel
from tests.emulators.telegram import TelegramEmulator

TOKEN = "123456789:AAHtestTokenForTheRelaydeskEmulator_x1"
WEBHOOK_SECRET = "s3cret-webhook_token"
ENV = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET}
# receiving loops that turn degraded after 0.3 s of failing and retry every 0.1 s at most
FAST_RECEIVING = ReceiveSettings(degraded_after=0.3, down_after=60, backoff_first=0.02, backoff_max=0.1)


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramEmulator]:
    """The Bot API of the test bot, on a free loopback port."""
    emulator = TelegramEmulator(TOKEN)
    await emulator.start()
    yield emulator
    await emulator.stop()


def telegram_entry(
    emulator: TelegramEmulator,
    *,
    mode: str = "polling",
    webhook_url: str | None = None,
    request_timeout: int = 15,
) -> str:
    """The plugins.yaml entry of the channel, pointed at ``emulator`` (secrets from ``ENV``)."""
    webhook = ""
    if mode == "webhook":
        webhook = '\n      webhook_secret: "${TELEGRAM_WEBHOOK_SECRET}"'
        if webhook_url is not None:  # else: server.public_url
            webhook += f'\n      webhook_url: "{webhook_url}"'
    return f"""
  - telegram:
      token: "${{TELEGRAM_BOT_TOKEN}}"
      api_server: "{emulator.base_url}"
      mode: {mode}
      poll_timeout: 10
      request_timeout: {request_timeout}{webhook}"""


def doubles_yaml(
    emulator: TelegramEmulator,
    *,
    port: int = 0,
    mode: str = "polling",
    webhook_url: str | None = None,
    request_timeout: int = 15,
    public_url: str | None = None,
) -> str:
    """A desk with the Telegram channel and the in-memory workspace double (HTTP on ``port`` if given,
    ``server.public_url`` if given)."""
    public = f', public_url: "{public_url}"' if public_url else ""
    server = f"server: {{host: 127.0.0.1, port: {port}{public}}}\n" if port else ""
    entry = telegram_entry(emulator, mode=mode, webhook_url=webhook_url, request_timeout=request_timeout)
    return f"""{server}plugins:{entry}
  - desk: {{use: "bot_core.testing:MemoryWorkspace"}}
"""


def only_telegram_yaml(emulator: TelegramEmulator) -> str:
    """A desk with only the Telegram channel (no workspace: messages are stored, nothing is mirrored)."""
    return f"plugins:{telegram_entry(emulator)}\n"


def parts(desk: Desk) -> tuple[TelegramChannel, MemoryWorkspace]:
    """The desk's Telegram channel and workspace double."""
    return cast(TelegramChannel, desk.plugins["telegram"]), cast(MemoryWorkspace, desk.plugins["desk"])


async def health_until(desk: Desk, status: str, timeout: float = 10.0) -> dict[str, Any]:
    """Ask the desk's health report until its status is ``status`` (the condition a test waits on)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (health := await desk.health())["status"] != status:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"health never said {status}: {health}")
        await asyncio.sleep(0.05)
    return health

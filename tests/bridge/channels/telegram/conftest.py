"""Fixtures of the Telegram channel tests: a fresh Bot API emulator per test and desk configs using it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest

from bot_core.desk import Desk
from bot_core.testing import MemoryWorkspace
from bridge.channels.telegram import TelegramChannel
from tests.emulators.telegram import TelegramEmulator

TOKEN = "123456789:AAHtestTokenForTheRelaydeskEmulator_x1"
WEBHOOK_SECRET = "s3cret-webhook_token"
ENV = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET}


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
    webhook = (
        f'\n      webhook_url: "{webhook_url}"\n      webhook_secret: "${{TELEGRAM_WEBHOOK_SECRET}}"'
        if mode == "webhook"
        else ""
    )
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
) -> str:
    """A desk with the Telegram channel and the in-memory workspace double (HTTP on ``port`` if given)."""
    server = f"server: {{host: 127.0.0.1, port: {port}}}\n" if port else ""
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

"""Fixtures of the plugin tests: the Telegram emulator, the second channel outreach and csat are tested on."""

from tests.bridge.channels.telegram.conftest import telegram

__all__ = ["telegram"]

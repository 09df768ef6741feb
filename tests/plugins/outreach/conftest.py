"""Fixtures of the outreach tests: the Telegram emulator fixture, for the second channel."""

from tests.bridge.channels.telegram.conftest import telegram

__all__ = ["telegram"]

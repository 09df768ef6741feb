"""The Telegram channel: customers write to the shop's bot (aiogram 3, polling or webhook)."""

from bridge.channels.telegram.channel import TelegramChannel

__all__ = ["TelegramChannel"]

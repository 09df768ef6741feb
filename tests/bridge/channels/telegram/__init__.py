"""Tests of the Telegram channel against the local Bot API emulator (tests/emulators/telegram.py)."""
